"""The PROXY protocol header a load balancer puts before an RTMP connection (v1 and v2)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ingest.proxy_protocol import V2_SIGNATURE, ProxyHeader, ProxyProtocolError, parse

RTMP_C0 = b"\x03" + bytes(8)  # what follows the header: the client's own bytes


def v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def test_a_v1_line_names_the_client_and_ends_where_its_bytes_begin() -> None:
    line = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 1935\r\n"
    assert parse(line + RTMP_C0) == ProxyHeader(len(line), ("203.0.113.7", 51234))
    line6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 1935\r\n"
    assert parse(line6) == ProxyHeader(len(line6), ("2001:db8::7", 40000))
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, None)
    assert parse(b"PROXY UNKNOWN ignored after it\r\n") == ProxyHeader(32, None)


def test_a_v2_header_names_the_client_and_local_or_unix_ones_name_nobody() -> None:
    inet = struct.pack("!4s4sHH", bytes([198, 51, 100, 9]), bytes([10, 0, 0, 2]), 6000, 1935)
    header = v2(1, 0x11, inet, tlvs=b"\x03\x00\x04abcd")  # a CRC TLV, skipped
    assert parse(header + RTMP_C0) == ProxyHeader(len(header), ("198.51.100.9", 6000))
    six = ipaddress.IPv6Address("2001:db8::9").packed
    inet6 = struct.pack("!16s16sHH", six, bytes(16), 7000, 1935)
    assert parse(v2(1, 0x21, inet6)).source == ("2001:db8::9", 7000)
    assert parse(v2(0, 0x00, b"")) == ProxyHeader(16, None)  # LOCAL: a health check
    assert parse(v2(1, 0x31, bytes(216))).source is None  # AF_UNIX


def test_every_prefix_of_a_header_asks_for_more() -> None:
    inet = struct.pack("!4s4sHH", bytes(4), bytes(4), 1, 2)
    for header in (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", v2(1, 0x11, inet)):
        for end in range(len(header)):
            assert parse(header[:end]) is None, header[:end]
        assert parse(header) is not None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x03" + bytes(1536), "no PROXY protocol header"),  # RTMP straight to the ingest
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "malformed PROXY v1"),
        (b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", "malformed PROXY v1"),
        (b"PROXY TCP4 example.com 192.0.2.2 1 2\r\n", "is not an address"),
        (b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "is not TCP4"),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", "is not a port"),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n", "is not a port"),
        (b"PROXY " + b"9" * 120, "longer than 107 bytes"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version/command"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "version/command"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "over 4096"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "addresses need 12 bytes"),
    ],
)
def test_anything_else_is_refused_with_what_was_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason):
        parse(data)
