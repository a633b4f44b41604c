"""The SRT listener: libsrt's non-blocking sockets, one epoll thread, the rest on the loop.

One thread (not one per stream) waits in `srt_epoll_uwait`, accepts connections and reads
every ready socket dry, and hands the bytes to the event loop; there each connection is
demuxed with `TsDemuxer` and pushed to its `Publication`, exactly like RTMP's media.

Authorisation happens twice. The listen callback (libsrt's handshake thread, before the
connection exists) parses the stream id and checks the key against PostgreSQL: a wrong key,
a disabled stream or a playback request is rejected with an SRT_REJX code the caller sees,
and nothing is accepted. That thread is shared by every SRT connection, so the check is
cheapest refusal first (`ingest.srt.key_gate`): a malformed key or one found unknown a
moment ago is refused without a lookup, and so is any key while every lookup is busy.
After accepting, `Publisher.begin` decides with the stream row locked, as for RTMP; a
second publisher of a live stream is refused there and closed.

How a publish ends. MPEG-TS carries no "unpublish" message, so the SRT connection itself
tells: an encoder that stops sends SRT's shutdown, and the socket breaks while media is still
flowing; a broken link (or a vanished encoder) breaks the socket only after the peer idle
timeout of silence. So a break within half that timeout of the last data is the publisher
closing (an explicit end: the session ends now), and a break after longer silence is a lost
link (the session stays open for the reconnect grace window). A connection that stays up but
sends nothing for `NEBULA_IDLE_TIMEOUT_SECONDS` is dropped like an idle RTMP client.

The end of a publish. libsrt holds each received packet for the link's latency (TSBPD)
before it can be read, and a shutdown breaks the socket at once: what arrived in the last
latency is still in the receive buffer. A broken socket is therefore drained (read again
until libsrt has released it, or for the latency and `DRAIN_MARGIN_SECONDS`) before the
publish ends. What the caller never sent is another matter: libsrt's live-mode default
linger is 0, so an encoder that closes right after its last write (ffmpeg) discards what
was still queued in its send buffer; only the caller can keep that (ffmpeg's `linger`).

Receive statistics (lost, retransmitted, dropped packets) and the demuxer's dropped units are
recorded on the session (media_info `ingest`) every `REPORT_SECONDS` and at the end (and at
once when the stream has a track we ignore, whose warning the sessions API shows). libsrt
cannot report on a broken socket, so the end uses the last sample, at most a second old.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from core.settings import Settings
from ingest import sessions
from ingest.publication import Publication
from ingest.publisher import Publisher
from ingest.srt import libsrt
from ingest.srt.key_gate import KeyGate, KeyRefusedError
from ingest.srt.libsrt import EpollFlag, ErrorCode, ReceiveStats, RejectReason, SockOpt, SrtError
from ingest.srt.streamid import StreamIdError, stream_key_from_stream_id
from media.demux.mpegts import TsDemuxer
from media.hls.segmenter import SegmentOverflowError
from media.types import AccessUnit, AudioConfig, VideoConfig

log = logging.getLogger(__name__)

BACKLOG = 64
EPOLL_EVENTS = 64
EPOLL_WAIT_MS = 200
# While a broken socket is drained, how often it is read again.
DRAIN_POLL_MS = 10
# How long after the link's latency a broken socket is read before it is given up.
DRAIN_MARGIN_SECONDS = 0.2
TICK_SECONDS = 1.0
REPORT_SECONDS = 10.0
# Bytes held for a connection while `Publisher.begin` is deciding (a few seconds at most).
MAX_PENDING_BYTES = 8 * 1024 * 1024


@dataclass(eq=False)
class SrtPublisherConnection:
    sock: int
    stream_key: str
    peer: tuple[str, int]
    last_data: float
    demuxer: TsDemuxer = field(default_factory=TsDemuxer)
    publication: Publication | None = None
    pending: bytearray = field(default_factory=bytearray)
    stats: ReceiveStats | None = None
    reported: bool = False
    drop_reason: str | None = None  # why we dropped the publisher, if we did
    # Decided when the socket broke, not after the drain (see `SrtListener._broken`).
    explicit_end: bool = False
    ended: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def end(self, *, explicit: bool) -> None:
        if not self.ended.done():
            self.ended.set_result(explicit)

    def report(self) -> dict[str, Any]:
        demuxer = self.demuxer
        report: dict[str, Any] = {
            "protocol": "srt",
            "dropped_units": demuxer.dropped_units,
            "dropped_reasons": dict(demuxer.drops),
            "warnings": [
                f"{stream.description}; only H.264, HEVC and AAC (ADTS) are ingested"
                for stream in demuxer.ignored_streams
            ],
        }
        if self.drop_reason is not None:
            report["warnings"].append(self.drop_reason)
        if self.stats is not None:
            report["srt"] = {
                "packets_received": self.stats.packets_received,
                "packets_lost": self.stats.packets_lost,
                "packets_retransmitted": self.stats.packets_retransmitted,
                "packets_dropped": self.stats.packets_dropped,
            }
        return report


class SrtListener:
    def __init__(self, publisher: Publisher, settings: Settings) -> None:
        self.publisher = publisher
        self.settings = settings
        self.connections: dict[int, SrtPublisherConnection] = {}
        self.publishing: dict[uuid.UUID, SrtPublisherConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: int | None = None
        self._eid: int | None = None
        self._callback: object = None
        self._key_gate = KeyGate(
            functools.partial(sessions.check_publish_key, settings.database_url),
            workers=settings.srt_key_check_workers,
            timeout=settings.key_check_timeout_seconds,
            cache_size=settings.srt_unknown_key_cache_size,
            cache_seconds=settings.srt_unknown_key_cache_seconds,
        )
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # The epoll thread's own: broken sockets still being read, and until when.
        self._draining: dict[int, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; `reuse_port` shares the UDP port with this host's other ingest processes
        (the kernel keeps each caller's datagrams on one of them, by its address)."""
        self._loop = asyncio.get_running_loop()
        sock = libsrt.create_socket()
        try:
            libsrt.set_flag(sock, SockOpt.RCVSYN, False)
            libsrt.set_flag(sock, SockOpt.RCVLATENCY, self.settings.srt_latency_ms)
            libsrt.set_flag(sock, SockOpt.PEERIDLETIMEO, self.settings.peer_idle_timeout_ms)
            if self.settings.srt_passphrase:
                libsrt.set_flag(sock, SockOpt.PASSPHRASE, self.settings.srt_passphrase)
            self._callback = libsrt.set_listen_callback(sock, self._authorise)
            if reuse_port:
                libsrt.bind_shared(sock, host, port)
            else:
                libsrt.bind(sock, host, port)
            libsrt.listen(sock, BACKLOG)
            self._eid = libsrt.epoll_create()
            libsrt.epoll_add(self._eid, sock, EpollFlag.IN | EpollFlag.ERR)
        except SrtError:
            libsrt.close(sock)
            raise
        self._listener = sock
        self._thread = threading.Thread(target=self._poll, name="srt-epoll", daemon=True)
        self._thread.start()
        self._ticker = asyncio.create_task(self._tick())

    # libsrt's threads

    def _authorise(self, sock: int, peer: tuple[str, int], stream_id: str) -> int:
        """The listen callback: 0 lets the handshake complete, -1 rejects it."""
        try:
            self._key_gate.admit(stream_key_from_stream_id(stream_id))
            return 0
        except (StreamIdError, KeyRefusedError) as exc:
            reason, why = exc.reason, str(exc)
        except Exception:
            log.exception("srt %s: key check failed", peer)
            reason, why = RejectReason.ISE, "key check failed or timed out"
        log.info("srt %s: rejected (%s): %s", peer, int(reason), why)
        libsrt.set_reject_reason(sock, reason)
        return -1

    def _poll(self) -> None:
        """The epoll thread: accept, read sockets dry, hand everything to the loop."""
        buffer = ctypes.create_string_buffer(libsrt.SRT_LIVE_MAX_PAYLOAD)
        assert self._loop is not None and self._eid is not None
        while not self._stopping.is_set():
            wait_ms = DRAIN_POLL_MS if self._draining else EPOLL_WAIT_MS
            try:
                ready = libsrt.epoll_wait(self._eid, EPOLL_EVENTS, wait_ms)
            except SrtError:
                log.exception("srt epoll failed; the listener stops")
                return
            for sock, events in ready:
                if sock == self._listener:
                    self._accept()
                else:
                    self._read_all(sock, events, buffer)
            for sock in list(self._draining):
                self._drain(sock, buffer)

    def _accept(self) -> None:
        """One pending connection (epoll is level-triggered: more come on the next wait;
        accepting until "none pending" would make libsrt log an error every time)."""
        try:
            accepted = libsrt.accept(self._listener)
        except SrtError as exc:
            log.warning("srt accept failed: %s", exc)
            return
        if accepted is None:
            return
        sock, peer = accepted
        try:
            stream_id = libsrt.get_str_flag(sock, SockOpt.STREAMID)
            libsrt.set_flag(sock, SockOpt.RCVSYN, False)
            libsrt.epoll_add(self._eid, sock, EpollFlag.IN | EpollFlag.ERR)
        except SrtError as exc:
            log.warning("srt %s: dropped right after accept: %s", peer, exc)
            _close_quietly(sock)
            return
        self._loop.call_soon_threadsafe(self._accepted, sock, peer, stream_id)

    def _read_all(self, sock: int, events: EpollFlag, buffer: ctypes.Array[ctypes.c_char]) -> None:
        error = self._read_ready(sock, buffer)
        if error is None and not events & EpollFlag.ERR:
            return
        # Broken: epoll would report it on every wait, so it is read on a timer instead.
        with contextlib.suppress(SrtError):  # already closed by the loop
            libsrt.epoll_remove(self._eid, sock)
        self._loop.call_soon_threadsafe(self._broken, sock)
        if error is not None and error.code != ErrorCode.ECONNLOST:
            self._loop.call_soon_threadsafe(self._lost, sock)  # gone: nothing left to read
            return
        try:
            latency = libsrt.get_int_flag(sock, SockOpt.RCVLATENCY) / 1000
        except SrtError:
            latency = self.settings.srt_latency_ms / 1000
        self._draining[sock] = time.monotonic() + latency + DRAIN_MARGIN_SECONDS

    def _drain(self, sock: int, buffer: ctypes.Array[ctypes.c_char]) -> None:
        """Read a broken socket again: packets held for their latency become readable. It
        is done once libsrt has released the socket (or closed by the loop) or time is up."""
        error = self._read_ready(sock, buffer)
        gone = error is not None and error.code != ErrorCode.ECONNLOST
        if gone or time.monotonic() >= self._draining[sock]:
            del self._draining[sock]
            self._loop.call_soon_threadsafe(self._lost, sock)

    def _read_ready(self, sock: int, buffer: ctypes.Array[ctypes.c_char]) -> SrtError | None:
        """Hand everything readable now to the loop; the error that ended the reading, if
        any (a broken or closed socket), else None."""
        chunks = []
        error = None
        try:
            while (size := libsrt.recvmsg(sock, buffer)) is not None:
                chunks.append(ctypes.string_at(buffer, size))
        except SrtError as exc:
            error = exc
        if chunks:
            self._loop.call_soon_threadsafe(self._received, sock, b"".join(chunks))
        return error

    # the event loop

    def _accepted(self, sock: int, peer: tuple[str, int], stream_id: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            key = stream_key_from_stream_id(stream_id)
        except StreamIdError:  # the callback accepted it; the stream id cannot change
            _close_quietly(sock)
            return
        conn = SrtPublisherConnection(sock, key, peer, loop.time())
        self.connections[sock] = conn
        task = asyncio.create_task(self._serve(conn), name=f"srt-{peer[0]}:{peer[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _received(self, sock: int, data: bytes) -> None:
        conn = self.connections.get(sock)
        if conn is None:
            return
        conn.last_data = asyncio.get_running_loop().time()
        if conn.ended.done():  # dropped: what it sends until the socket closes is ignored
            return
        if conn.publication is None:
            if len(conn.pending) + len(data) <= MAX_PENDING_BYTES:
                conn.pending += data
            return
        self._push(conn, data)

    def _push(self, conn: SrtPublisherConnection, data: bytes) -> None:
        self._push_items(conn, conn.demuxer.feed(data), len(data))

    def _push_items(
        self,
        conn: SrtPublisherConnection,
        items: list[AccessUnit | VideoConfig | AudioConfig],
        received: int,
    ) -> None:
        assert conn.publication is not None
        try:
            conn.publication.push(items, received)
        except SegmentOverflowError as exc:
            # No keyframe for far too long: the publisher is dropped, and the session says why.
            reason = f"the publisher was dropped: {exc}"
            log.warning(
                "srt %s: publisher of stream %s dropped: %s",
                conn.peer,
                conn.publication.grant.stream_id,
                exc,
            )
            conn.drop_reason = reason
            conn.end(explicit=False)
        except Exception:
            # The demuxer only emits what the packager takes; should that ever fail, the
            # media in this chunk is lost but the session goes on.
            log.exception("srt %s: media could not be packaged", conn.peer)

    def _broken(self, sock: int) -> None:
        """The socket broke: whether that is the publisher closing depends on the silence
        before the break (see the module doc), not on how long the drain takes."""
        conn = self.connections.get(sock)
        if conn is not None:
            silence = asyncio.get_running_loop().time() - conn.last_data
            conn.explicit_end = silence < self.settings.peer_idle_timeout_ms / 1000 / 2

    def _lost(self, sock: int) -> None:
        """The broken socket has been read dry: the publish ends."""
        conn = self.connections.get(sock)
        if conn is not None:
            conn.end(explicit=conn.explicit_end)

    async def _serve(self, conn: SrtPublisherConnection) -> None:
        publication = None
        explicit = False
        try:
            publication, reason = await self.publisher.begin(conn.stream_key, "srt")
            if publication is None:
                log.info("srt %s: publish refused: %s", conn.peer, reason)
                return
            conn.publication = publication
            self.publishing[publication.grant.stream_id] = conn
            pending, conn.pending = bytes(conn.pending), bytearray()
            if pending:
                self._push(conn, pending)
            explicit = await conn.ended
        finally:
            self.connections.pop(conn.sock, None)
            _close_quietly(conn.sock)
            if publication is not None:
                if self.publishing.get(publication.grant.stream_id) is conn:
                    del self.publishing[publication.grant.stream_id]
                await self._finish(conn, publication, explicit)

    async def _finish(
        self, conn: SrtPublisherConnection, publication: Publication, explicit: bool
    ) -> None:
        self._push_items(conn, conn.demuxer.flush(), 0)
        report = conn.report()
        log.info(
            "srt %s: publish ended (%s): %s",
            conn.peer,
            "an explicit end" if explicit else "connection lost",
            report,
        )
        await self._record_report(conn, report)
        await self.publisher.end(publication, explicit=explicit)

    async def _tick(self) -> None:
        """Every second: sample receive stats, drop idle connections, report periodically."""
        loop = asyncio.get_running_loop()
        next_report = loop.time() + REPORT_SECONDS
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = loop.time()
            for conn in list(self.connections.values()):
                with contextlib.suppress(SrtError):  # broken: the epoll thread reports it
                    conn.stats = libsrt.receive_stats(conn.sock)
                idle_timeout = self.settings.idle_timeout_seconds
                if now - conn.last_data > idle_timeout:
                    log.info("srt %s: idle for %.0f s, dropped", conn.peer, idle_timeout)
                    conn.end(explicit=False)
            due = now >= next_report
            if due:
                next_report = now + REPORT_SECONDS
            for conn in list(self.publishing.values()):
                # An ignored track is worth telling the streamer at once, not in 10 s.
                if due or (conn.demuxer.ignored_streams and not conn.reported):
                    report = conn.report()
                    log.info("srt %s: %s", conn.peer, report)
                    await self._record_report(conn, report)

    async def _record_report(self, conn: SrtPublisherConnection, report: dict[str, Any]) -> None:
        assert conn.publication is not None
        conn.reported = True
        await conn.publication.record_report(report)

    def disconnect(self, stream_id: uuid.UUID) -> bool:
        """Drop the stream's publisher if this process holds it; its session ends at once."""
        conn = self.publishing.get(stream_id)
        if conn is None:
            return False
        conn.end(explicit=True)
        return True

    async def close(self, timeout: float = 10.0) -> None:
        """Stop listening and drop every publisher; what each sent is stored first. Their
        sessions stay open for the grace window, so a restarted ingest can resume them."""
        if self._ticker is not None:
            self._ticker.cancel()
        for conn in list(self.connections.values()):
            conn.end(explicit=False)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)
        if self._listener is not None:
            _close_quietly(self._listener)
        if self._eid is not None:
            libsrt.epoll_release(self._eid)
        self._key_gate.shutdown()


def _close_quietly(sock: int) -> None:
    with contextlib.suppress(SrtError):  # already closed or never fully opened
        libsrt.close(sock)
