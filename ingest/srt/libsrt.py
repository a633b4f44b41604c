"""A ctypes binding of libsrt 1.5: only the calls the SRT listener uses.

Constants are those of libsrt 1.5.1's `srt.h` and `access_control.h` (Debian's
libsrt-openssl-dev 1.5.1). Every failing call raises `SrtError` with libsrt's error code
and message; "would block" on a non-blocking socket is reported by return value instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cache

log = logging.getLogger(__name__)

# Debian ships the library as libsrt1.5-openssl (libsrt.so.1.5) or libsrt1.5-gnutls
# (libsrt-gnutls.so.1.5); either serves.
LIBRARY_NAMES = ("libsrt.so.1.5", "libsrt-openssl.so.1.5", "libsrt-gnutls.so.1.5")

SRT_ERROR = -1
SRT_INVALID_SOCK = -1
# srt_recvmsg in live mode never returns more than one packet's payload.
SRT_LIVE_MAX_PAYLOAD = 1456


class SockOpt(IntEnum):
    """SRT_SOCKOPT values used here."""

    RCVSYN = 2
    PASSPHRASE = 26
    RCVLATENCY = 43
    STREAMID = 46
    PEERIDLETIMEO = 55


class SockStatus(IntEnum):
    INIT = 1
    OPENED = 2
    LISTENING = 3
    CONNECTING = 4
    CONNECTED = 5
    BROKEN = 6
    CLOSING = 7
    CLOSED = 8
    NONEXIST = 9


class EpollFlag(IntFlag):
    IN = 0x1
    OUT = 0x4
    ERR = 0x8


class ErrorCode(IntEnum):
    """SRT_ERRNO values the listener tells apart."""

    ECONNLOST = 2001
    EINVSOCK = 5004  # also what a broken socket libsrt has already cleaned up gives
    EASYNCRCV = 6002
    ETIMEOUT = 6003


class RejectReason(IntEnum):
    """SRT_REJX_* codes (access_control.h): what a refused caller is told, HTTP-like + 1000."""

    BAD_REQUEST = 1400
    FORBIDDEN = 1403
    NOTFOUND = 1404
    BAD_MODE = 1405
    ISE = 1500


class SrtError(OSError):
    """A libsrt call failed; `code` is libsrt's SRT_ERRNO."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(code, f"{call}: {message} (SRT error {code})")
        self.call = call
        self.code = code


@dataclass(frozen=True, slots=True)
class ReceiveStats:
    """Receiver-side totals of one connection (CBytePerfMon's *Total fields)."""

    packets_received: int
    packets_lost: int  # detected as missing; most are recovered by retransmission
    packets_dropped: int  # too late to play: lost for good
    packets_retransmitted: int  # retransmissions received (counters are never cleared)
    bytes_received: int
    bytes_dropped: int


class _PerfMonPrefix(ctypes.Structure):
    """The leading fields of `struct CBytePerfMon` we read, in libsrt 1.5's layout."""

    _fields_ = (
        ("msTimeStamp", ctypes.c_int64),
        ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64),
        ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int),
        ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int),
        ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int),
        ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64),
        ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int),
        ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64),
        ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
        ("byteRetransTotal", ctypes.c_uint64),
        ("byteSndDropTotal", ctypes.c_uint64),
        ("byteRcvDropTotal", ctypes.c_uint64),
        ("byteRcvUndecryptTotal", ctypes.c_uint64),
        ("pktSent", ctypes.c_int64),
        ("pktRecv", ctypes.c_int64),
        ("pktSndLoss", ctypes.c_int),
        ("pktRcvLoss", ctypes.c_int),
        ("pktRetrans", ctypes.c_int),
        ("pktRcvRetrans", ctypes.c_int),
    )


# The whole struct is about 400 bytes in 1.5; libsrt writes all of it, so leave ample room.
PERF_MON_BUFFER_BYTES = 4096


class _EpollEvent(ctypes.Structure):
    _fields_ = (("fd", ctypes.c_int), ("events", ctypes.c_int))


# int (*)(void* opaque, SRTSOCKET ns, int hsversion, const sockaddr* peer, const char* streamid)
ListenCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)


def _find_library() -> ctypes.CDLL:
    tried = []
    for name in (*LIBRARY_NAMES, ctypes.util.find_library("srt")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            tried.append(f"{name}: {exc}")
    raise OSError(
        "libsrt 1.5 not found; install libsrt1.5-openssl or libsrt1.5-gnutls. Tried: "
        + "; ".join(tried)
    )


_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "srt_startup": (ctypes.c_int, []),
    "srt_cleanup": (ctypes.c_int, []),
    "srt_create_socket": (ctypes.c_int, []),
    "srt_setsockflag": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]),
    "srt_getsockflag": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)],
    ),
    "srt_bind": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_bind_acquire": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "srt_listen": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "srt_connect": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_listen_callback": (ctypes.c_int, [ctypes.c_int, ListenCallback, ctypes.c_void_p]),
    "srt_accept": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)],
    ),
    "srt_recvmsg": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    "srt_close": (ctypes.c_int, [ctypes.c_int]),
    "srt_epoll_create": (ctypes.c_int, []),
    "srt_epoll_add_usock": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)],
    ),
    "srt_epoll_remove_usock": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "srt_epoll_uwait": (
        ctypes.c_int,
        [ctypes.c_int, ctypes.POINTER(_EpollEvent), ctypes.c_int, ctypes.c_int64],
    ),
    "srt_epoll_release": (ctypes.c_int, [ctypes.c_int]),
    "srt_getlasterror": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "srt_getlasterror_str": (ctypes.c_char_p, []),
    "srt_setrejectreason": (ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
    "srt_getrejectreason": (ctypes.c_int, [ctypes.c_int]),
    "srt_bstats": (ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]),
    "srt_getsockstate": (ctypes.c_int, [ctypes.c_int]),
}


@cache
def library() -> ctypes.CDLL:
    """libsrt with argument and result types declared, started up once per process."""
    lib = _find_library()
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    if lib.srt_startup() < 0:
        raise _last_error(lib, "srt_startup")
    return lib


def _last_error(lib: ctypes.CDLL, call: str) -> SrtError:
    code = lib.srt_getlasterror(None)
    message = (lib.srt_getlasterror_str() or b"unknown error").decode(errors="replace")
    return SrtError(call, code, message)


def _nothing_pending(lib: ctypes.CDLL) -> bool:
    """Whether the call that just failed only found nothing to read or accept (non-blocking).
    Every read loop ends this way, so the error message is not fetched for it."""
    return lib.srt_getlasterror(None) == ErrorCode.EASYNCRCV


def _check(call: str, result: int) -> int:
    if result == SRT_ERROR:
        raise _last_error(library(), call)
    return result


def cleanup() -> None:
    """Release libsrt's threads (only after every socket is closed); `library()` restarts."""
    if library.cache_info().currsize:
        library().srt_cleanup()
        library.cache_clear()


def create_socket() -> int:
    return _check("srt_create_socket", library().srt_create_socket())


def set_flag(sock: int, option: SockOpt, value: int | bool | str) -> None:
    if isinstance(value, str):
        raw = value.encode()
        buffer = ctypes.create_string_buffer(raw, len(raw))
        _check(
            f"srt_setsockflag({option.name})",
            library().srt_setsockflag(sock, option, buffer, len(raw)),
        )
        return
    number = ctypes.c_int(int(value))
    _check(
        f"srt_setsockflag({option.name})",
        library().srt_setsockflag(sock, option, ctypes.byref(number), ctypes.sizeof(number)),
    )


def get_int_flag(sock: int, option: SockOpt) -> int:
    number = ctypes.c_int(0)
    size = ctypes.c_int(ctypes.sizeof(number))
    _check(
        f"srt_getsockflag({option.name})",
        library().srt_getsockflag(sock, option, ctypes.byref(number), ctypes.byref(size)),
    )
    return number.value


def get_str_flag(sock: int, option: SockOpt, max_bytes: int = 1024) -> str:
    buffer = ctypes.create_string_buffer(max_bytes)
    size = ctypes.c_int(max_bytes)
    _check(
        f"srt_getsockflag({option.name})",
        library().srt_getsockflag(sock, option, buffer, ctypes.byref(size)),
    )
    return buffer.raw[: size.value].decode(errors="replace")


def _sockaddr(host: str, port: int) -> bytes:
    """A Linux sockaddr_in / sockaddr_in6 for a host name or address."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    packed = socket.inet_pton(family, address[0])
    if family == socket.AF_INET6:
        return struct.pack("=H", family) + struct.pack("!HI16sI", port, 0, packed, 0)
    return struct.pack("=H", family) + struct.pack("!H4s8x", port, packed)


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(address, port) of a sockaddr_in / sockaddr_in6; ("", 0) for anything else."""
    if len(raw) < 2:
        return "", 0
    (family,) = struct.unpack("=H", raw[:2])
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]
    return "", 0


SOCKADDR_IN6_BYTES = 28


def bind(sock: int, host: str, port: int) -> None:
    address = _sockaddr(host, port)
    _check("srt_bind", library().srt_bind(sock, address, len(address)))


def bind_shared(sock: int, host: str, port: int) -> None:
    """Bind on a UDP socket of our own with SO_REUSEPORT, which libsrt then owns (it closes
    it with `sock`): several processes can listen on one port this way."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    udp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.bind((host, port))
    except OSError:
        udp.close()
        raise
    fd = udp.detach()
    try:
        _check("srt_bind_acquire", library().srt_bind_acquire(sock, fd))
    except SrtError:
        os.close(fd)
        raise


def listen(sock: int, backlog: int) -> None:
    _check("srt_listen", library().srt_listen(sock, backlog))


def set_listen_callback(sock: int, callback: Callable[[int, tuple[str, int], str], int]) -> object:
    """Run `callback(new_socket, peer, stream_id)` on every handshake, in libsrt's thread,
    before the connection is accepted: 0 accepts, -1 rejects (set a reason with
    `set_reject_reason` first). An exception in the callback rejects. Returns the C
    function object: the caller must keep it alive as long as the listener."""

    def hook(_opaque: int, new_sock: int, _hs_version: int, peer: int, stream_id: bytes) -> int:
        try:
            raw_peer = ctypes.string_at(peer, SOCKADDR_IN6_BYTES) if peer else b""
            return callback(new_sock, parse_sockaddr(raw_peer), (stream_id or b"").decode())
        except Exception:
            log.exception("SRT listen callback failed; the caller is rejected")
            return SRT_ERROR

    function = ListenCallback(hook)
    _check("srt_listen_callback", library().srt_listen_callback(sock, function, None))
    return function


def accept(sock: int) -> tuple[int, tuple[str, int]] | None:
    """A pending connection and its peer, or None when there is none (non-blocking)."""
    address = ctypes.create_string_buffer(SOCKADDR_IN6_BYTES)
    size = ctypes.c_int(SOCKADDR_IN6_BYTES)
    lib = library()
    new_sock = lib.srt_accept(sock, address, ctypes.byref(size))
    if new_sock == SRT_INVALID_SOCK:
        if _nothing_pending(lib):
            return None
        raise _last_error(lib, "srt_accept")
    return new_sock, parse_sockaddr(address.raw[: size.value])


def recvmsg(sock: int, buffer: ctypes.Array[ctypes.c_char]) -> int | None:
    """Read one message into `buffer`; its size, or None when nothing is ready."""
    lib = library()
    size = lib.srt_recvmsg(sock, buffer, len(buffer))
    if size == SRT_ERROR:
        if _nothing_pending(lib):
            return None
        raise _last_error(lib, "srt_recvmsg")
    return size


def close(sock: int) -> None:
    _check("srt_close", library().srt_close(sock))


def epoll_create() -> int:
    return _check("srt_epoll_create", library().srt_epoll_create())


def epoll_add(eid: int, sock: int, events: EpollFlag) -> None:
    flags = ctypes.c_int(int(events))
    _check("srt_epoll_add_usock", library().srt_epoll_add_usock(eid, sock, ctypes.byref(flags)))


def epoll_remove(eid: int, sock: int) -> None:
    _check("srt_epoll_remove_usock", library().srt_epoll_remove_usock(eid, sock))


def epoll_wait(eid: int, max_events: int, timeout_ms: int) -> list[tuple[int, EpollFlag]]:
    """Ready sockets and their events; empty after `timeout_ms` without any."""
    events = (_EpollEvent * max_events)()
    lib = library()
    count = lib.srt_epoll_uwait(eid, events, max_events, timeout_ms)
    if count == SRT_ERROR:
        error = _last_error(lib, "srt_epoll_uwait")
        if error.code == ErrorCode.ETIMEOUT:
            return []
        raise error
    ready = events[: min(count, max_events)]
    return [
        (event.fd, EpollFlag(event.events & (EpollFlag.IN | EpollFlag.OUT | EpollFlag.ERR)))
        for event in ready
    ]


def epoll_release(eid: int) -> None:
    _check("srt_epoll_release", library().srt_epoll_release(eid))


def set_reject_reason(sock: int, reason: int) -> None:
    _check("srt_setrejectreason", library().srt_setrejectreason(sock, reason))


def connect(sock: int, host: str, port: int) -> None:
    """Call a listener (blocking until it accepts or rejects); a caller, for benchmarks that
    play many encoders at once in one process."""
    address = _sockaddr(host, port)
    _check("srt_connect", library().srt_connect(sock, address, len(address)))


def reject_reason(sock: int) -> int:
    """Why the peer rejected this socket's connection: a RejectReason, or libsrt's own code."""
    return library().srt_getrejectreason(sock)


def socket_state(sock: int) -> SockStatus:
    return SockStatus(library().srt_getsockstate(sock))


def receive_stats(sock: int) -> ReceiveStats:
    buffer = ctypes.create_string_buffer(PERF_MON_BUFFER_BYTES)
    _check("srt_bstats", library().srt_bstats(sock, buffer, 0))
    perf = _PerfMonPrefix.from_buffer(buffer)
    return ReceiveStats(
        packets_received=perf.pktRecvTotal,
        packets_lost=perf.pktRcvLossTotal,
        packets_dropped=perf.pktRcvDropTotal,
        packets_retransmitted=perf.pktRcvRetrans,
        bytes_received=perf.byteRecvTotal,
        bytes_dropped=perf.byteRcvDropTotal,
    )
