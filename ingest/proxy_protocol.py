"""The PROXY protocol header (versions 1 and 2) that a TCP load balancer sends before a
connection's first byte to say whose connection it is.

Behind nginx (`proxy_protocol on`) or HAProxy (`send-proxy`), every RTMP connection comes
from the balancer's address; with `NEBULA_RTMP_PROXY_PROTOCOL` on, the ingest reads this
header first, so the connection caps and the logs see the publisher. Sans-IO: `parse`
takes the bytes received so far.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_BYTES = 107  # the spec's longest line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16
# Addresses plus TLVs; the spec sets no limit, balancers send well under 1 KiB.
V2_MAX_BYTES = 4096
_V2_ADDRESSES = {0x1: ("!4s4sHH", 4), 0x2: ("!16s16sHH", 16)}  # AF_INET, AF_INET6


class ProxyProtocolError(ValueError):
    """Not a PROXY protocol header: the connection did not come through the balancer."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    size: int  # bytes the header took; what follows is the client's
    # The client's (address, port); None when the balancer speaks for itself (v2 LOCAL, v1
    # UNKNOWN: a health check, say) or names no IP address.
    source: tuple[str, int] | None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, or None while it may still be incomplete."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data) or V1_PREFIX.startswith(data):
        return None
    raise ProxyProtocolError(f"no PROXY protocol header: the connection begins {data[:16]!r}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(data) >= V1_MAX_BYTES:
            raise ProxyProtocolError(f"PROXY v1 line longer than {V1_MAX_BYTES} bytes")
        return None
    fields = data[:end].decode("ascii", errors="replace").split(" ")
    size = end + 2
    if fields[1:2] == ["UNKNOWN"]:
        return ProxyHeader(size, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {data[:end]!r}")
    _, family, source, _, source_port, _ = fields
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 source {source!r} is not an address") from None
    if address.version != (4 if family == "TCP4" else 6):
        raise ProxyProtocolError(f"PROXY v1 source {source!r} is not {family}")
    return ProxyHeader(size, (str(address), _port(source_port)))


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {text!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED_BYTES:
        return None
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2 or version_command & 0xF > 1:
        raise ProxyProtocolError(f"PROXY v2 version/command byte {version_command:#04x}")
    size = V2_FIXED_BYTES + length
    if size > V2_MAX_BYTES:
        raise ProxyProtocolError(f"PROXY v2 header of {size} bytes, over {V2_MAX_BYTES}")
    if len(data) < size:
        return None
    layout = _V2_ADDRESSES.get(family_protocol >> 4)
    if version_command & 0xF == 0 or layout is None:  # LOCAL, or AF_UNSPEC / AF_UNIX
        return ProxyHeader(size, None)
    fmt, width = layout
    if length < struct.calcsize(fmt):
        raise ProxyProtocolError(f"PROXY v2 addresses need {struct.calcsize(fmt)} bytes")
    source, _, source_port, _ = struct.unpack_from(fmt, data, V2_FIXED_BYTES)
    address = ipaddress.IPv4Address(source) if width == 4 else ipaddress.IPv6Address(source)
    return ProxyHeader(size, (str(address), source_port))
