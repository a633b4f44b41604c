"""The libsrt binding against real SRT callers: srt-live-transmit and the ffmpeg CLI."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ingest.srt import libsrt
from ingest.srt.libsrt import EpollFlag, RejectReason, SockOpt, SockStatus, SrtError
from media.demux.mpegts import TsDemuxer
from media.types import AccessUnit
from tests.live_stack import free_udp_port
from tests.media import make_ts_source, publish_ts

PASSPHRASE = "correct-horse-battery"
CHUNK = 1456  # srt-live-transmit sends what it reads in chunks of this size


@dataclass
class Listener:
    """A listening socket and its epoll, driven by the test (`poll`), as the server's thread."""

    port: int
    sock: int
    eid: int
    handshakes: list[tuple[tuple[str, int], str]] = field(default_factory=list)
    accepted: dict[int, str] = field(default_factory=dict)  # socket -> stream id
    received: dict[int, bytearray] = field(default_factory=dict)
    broken: dict[int, SockStatus] = field(default_factory=dict)
    stats: dict[int, libsrt.ReceiveStats] = field(default_factory=dict)

    def poll(self, seconds: float) -> None:
        buffer = ctypes.create_string_buffer(libsrt.SRT_LIVE_MAX_PAYLOAD)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for sock, events in libsrt.epoll_wait(self.eid, 16, 100):
                if sock == self.sock:
                    accepted = libsrt.accept(self.sock)
                    if accepted is not None:
                        new = accepted[0]
                        self.accepted[new] = libsrt.get_str_flag(new, SockOpt.STREAMID)
                        self.received[new] = bytearray()
                        libsrt.epoll_add(self.eid, new, EpollFlag.IN | EpollFlag.ERR)
                    continue
                try:
                    while (size := libsrt.recvmsg(sock, buffer)) is not None:
                        self.received[sock] += buffer.raw[:size]
                    self.stats[sock] = libsrt.receive_stats(sock)
                except SrtError as exc:
                    assert exc.code in (libsrt.ErrorCode.ECONNLOST, libsrt.ErrorCode.EINVSOCK)
                    events |= EpollFlag.ERR
                if events & EpollFlag.ERR:
                    self.broken[sock] = libsrt.socket_state(sock)
                    with contextlib.suppress(SrtError):  # libsrt may have removed it
                        libsrt.epoll_remove(self.eid, sock)

    def poll_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            self.poll(0.2)


@contextmanager
def listening(
    accept: Callable[[str], RejectReason | None] = lambda _: None,
    passphrase: str | None = None,
) -> Iterator[Listener]:
    sock = libsrt.create_socket()
    libsrt.set_flag(sock, SockOpt.RCVSYN, False)
    libsrt.set_flag(sock, SockOpt.RCVLATENCY, 200)
    if passphrase:
        libsrt.set_flag(sock, SockOpt.PASSPHRASE, passphrase)
    port = free_udp_port()
    listener = Listener(port, sock, libsrt.epoll_create())

    def callback(new_sock: int, peer: tuple[str, int], stream_id: str) -> int:
        listener.handshakes.append((peer, stream_id))
        reason = accept(stream_id)
        if reason is None:
            return 0
        libsrt.set_reject_reason(new_sock, reason)
        return -1

    keep_alive = libsrt.set_listen_callback(sock, callback)
    libsrt.bind(sock, "127.0.0.1", port)
    libsrt.listen(sock, 8)
    libsrt.epoll_add(listener.eid, sock, EpollFlag.IN | EpollFlag.ERR)
    try:
        yield listener
    finally:
        for accepted in listener.accepted:
            with contextlib.suppress(SrtError):  # broken ones may be gone already
                libsrt.close(accepted)
        libsrt.close(sock)
        libsrt.epoll_release(listener.eid)
        del keep_alive


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory) -> Path:
    return make_ts_source(tmp_path_factory.mktemp("srt") / "a.ts", seconds=2, size="320x240")


def test_bytes_from_srt_live_transmit_arrive_exactly_and_the_close_breaks_the_socket() -> None:
    payload = os.urandom(CHUNK * 150)
    with listening() as listener:
        sender = subprocess.Popen(
            [
                "srt-live-transmit",
                "-q",
                "file://con",
                f"srt://127.0.0.1:{listener.port}?streamid=x",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            listener.poll_until(lambda: bool(listener.accepted), 10)
            [sock] = listener.accepted
            assert listener.accepted[sock] == "x"
            assert libsrt.socket_state(sock) is SockStatus.CONNECTED
            assert libsrt.get_int_flag(sock, SockOpt.RCVLATENCY) >= 200
            for offset in range(0, len(payload), CHUNK * 10):
                sender.stdin.write(payload[offset : offset + CHUNK * 10])
                sender.stdin.flush()
                listener.poll(0.02)
            listener.poll_until(lambda: len(listener.received[sock]) >= len(payload), 10)
        finally:
            sender.stdin.close()
            sender.terminate()
            sender.wait(10)
        listener.poll_until(lambda: sock in listener.broken, 10)
    assert bytes(listener.received[sock]) == payload
    assert listener.broken[sock] in (SockStatus.BROKEN, SockStatus.CLOSED, SockStatus.NONEXIST)
    assert listener.stats[sock].packets_received >= 150
    assert listener.stats[sock].packets_dropped == 0


def test_ffmpeg_publishing_mpegts_is_received_and_demuxes(ts_file: Path) -> None:
    with listening() as listener:
        publisher = publish_ts(
            ts_file, f"srt://127.0.0.1:{listener.port}?streamid=#!::r=live/k,m=publish"
        )
        try:
            listener.poll_until(
                lambda: bool(listener.accepted) and publisher.poll() is not None, 30
            )
            listener.poll_until(lambda: bool(listener.broken), 10)
        finally:
            publisher.kill()
            publisher.wait(10)
    [(sock, stream_id)] = listener.accepted.items()
    assert stream_id == "#!::r=live/k,m=publish"
    demuxer = TsDemuxer()
    items = demuxer.feed(bytes(listener.received[sock])) + demuxer.flush()
    video = [i for i in items if isinstance(i, AccessUnit) and i.kind == "video"]
    assert len(video) >= 55  # of 60: what was still in flight at the close may be missing
    assert demuxer.drops == {}


def test_a_rejected_caller_fails_and_is_never_accepted(ts_file: Path) -> None:
    with listening(accept=lambda stream_id: RejectReason.FORBIDDEN) as listener:
        publisher = publish_ts(ts_file, f"srt://127.0.0.1:{listener.port}?streamid=wrong-key")
        try:
            listener.poll_until(lambda: publisher.poll() is not None, 20)
        finally:
            publisher.kill()
            publisher.wait(10)
        listener.poll(0.3)
    assert publisher.returncode != 0
    assert b"Input/output error" in publisher.stderr.read()
    assert {stream_id for _, stream_id in listener.handshakes} == {"wrong-key"}
    assert listener.handshakes[0][0][0] == "127.0.0.1"
    assert listener.accepted == {}


def test_with_a_passphrase_only_callers_that_know_it_connect(ts_file: Path) -> None:
    with listening(passphrase=PASSPHRASE) as listener:
        url = f"srt://127.0.0.1:{listener.port}?streamid=k"
        plain = publish_ts(ts_file, url)
        wrong = publish_ts(ts_file, url + "&passphrase=not-the-passphrase")
        try:
            listener.poll_until(lambda: plain.poll() is not None and wrong.poll() is not None, 20)
        finally:
            for process in (plain, wrong):
                process.kill()
                process.wait(10)
        assert plain.returncode != 0
        assert wrong.returncode != 0
        assert listener.accepted == {}

        right = publish_ts(ts_file, url + f"&passphrase={PASSPHRASE}")
        try:
            listener.poll_until(lambda: right.poll() is not None, 30)
            listener.poll_until(lambda: bool(listener.broken), 10)
        finally:
            right.kill()
            right.wait(10)
    [sock] = listener.accepted
    assert bytes(listener.received[sock][:1]) == b"\x47"  # decrypted MPEG-TS
