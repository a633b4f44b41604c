"""The asyncio RTMP listener: reads sockets, feeds the sans-IO core, writes what it returns."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import Counter, deque

from core.settings import Settings
from ingest import proxy_protocol
from ingest.proxy_protocol import ProxyProtocolError
from ingest.publication import Publication
from ingest.publisher import Publisher
from ingest.rtmp.connection import ServerConnection
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.events import (
    AudioMessage,
    Event,
    PublishEnded,
    PublishRequested,
    StreamMetadata,
    VideoMessage,
)
from media.demux.flv import FlvDemuxer

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
EXPLICIT_UNPUBLISH = {"FCUnpublish", "deleteStream", "closeStream"}


def stream_key_from_rtmp(app: str, stream_name: str) -> str:
    """`rtmp://host/live/KEY`: the key is the stream name; some clients put it in the app."""
    return stream_name or app.rpartition("/")[2]


class RtmpConnectionHandler:
    """Serves RTMP connections. Before a publish is accepted a client is a stranger, so it
    gets bounded time and company: the handshake, connect and publish must be done within
    `rtmp_publish_deadline_seconds` however slowly it sends (the idle timeout alone would
    let it dribble a byte every few seconds for ever), and connections past the global or
    per-IP cap are closed on accept. Every write waits at most `rtmp_write_timeout_seconds`
    for a client to take it."""

    def __init__(self, publisher: Publisher, settings: Settings) -> None:
        self.publisher = publisher
        self.settings = settings
        # A client that sends nothing for this long (no handshake, no media) is dropped.
        self.idle_timeout = settings.idle_timeout_seconds
        self.new_connection = functools.partial(
            ServerConnection,
            max_chunk_size=settings.rtmp_max_chunk_bytes,
            max_message_size=settings.rtmp_max_message_bytes,
            max_chunk_streams=settings.rtmp_max_chunk_streams,
            max_pending_bytes=settings.rtmp_max_pending_bytes,
            max_receive_buffer=settings.rtmp_max_receive_buffer_bytes,
            max_prepublish_amf_size=settings.rtmp_max_prepublish_amf_bytes,
            out_chunk_size=settings.rtmp_out_chunk_bytes,
            window_ack_size=settings.rtmp_window_ack_bytes,
        )
        self.new_connection()  # limits that do not fit together fail here, at start
        self.connections: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[str] = Counter()
        # The connection holding each stream's publisher here, for `disconnect`.
        self.publishing: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._dropped: set[asyncio.Task[None]] = set()

    def disconnect(self, stream_id: uuid.UUID) -> bool:
        """Drop the stream's publisher if this process holds it; its session ends at once
        (an explicit end, no reconnect grace). Returns whether it was held here."""
        task = self.publishing.get(stream_id)
        if task is None:
            return False
        self._dropped.add(task)
        task.cancel()
        return True

    async def close_all(self, timeout: float = 10.0) -> None:
        """Drop every client; each one's segments so far are stored before this returns."""
        for task in self.connections:
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=timeout)

    async def _through_balancer(
        self, reader: asyncio.StreamReader, balancer: object
    ) -> tuple[object, bytes]:
        """The publisher's address from the PROXY header the balancer sends first (the
        balancer's own when it names none), and the RTMP bytes read past the header."""
        data = b""
        async with asyncio.timeout(self.settings.rtmp_publish_deadline_seconds):
            while (header := proxy_protocol.parse(data)) is None:
                more = await reader.read(proxy_protocol.V2_MAX_BYTES)
                if not more:
                    raise ConnectionError("closed before its PROXY header")
                data += more
        return header.source or balancer, data[header.size :]

    def _over_cap(self, ip: str) -> str | None:
        """Why a new connection from `ip` is refused, or None."""
        if len(self.connections) >= self.settings.rtmp_max_connections:
            return f"{len(self.connections)} connections held, the limit"
        if self._per_ip[ip] >= self.settings.rtmp_max_connections_per_ip:
            return f"{self._per_ip[ip]} connections held from {ip}, the per-IP limit"
        return None

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        early = b""
        if self.settings.rtmp_proxy_protocol:
            try:
                peer, early = await self._through_balancer(reader, peer)
            except (ProxyProtocolError, TimeoutError, ConnectionError) as exc:
                log.warning("rtmp %s: closed: %s", peer, exc or "no PROXY header in time")
                writer.transport.abort()
                return
        ip = str(peer[0]) if peer else "unknown"
        refusal = self._over_cap(ip)
        if refusal is not None:
            log.warning("rtmp %s: refused on accept: %s", peer, refusal)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self.connections.add(task)
        self._per_ip[ip] += 1
        session = _Connection(self, peer, writer)
        try:
            await session.serve(reader, early)
        except Exception:
            log.exception("rtmp %s: connection failed", peer)
        finally:
            self.connections.discard(task)
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            dropped = task in self._dropped
            self._dropped.discard(task)
            await session.end(task, dropped=dropped)


class _WriteTimeoutError(Exception):
    """The client did not take what we sent within `rtmp_write_timeout_seconds`."""


class _Connection:
    """One client's connection from accept to close (see `RtmpConnectionHandler`)."""

    def __init__(
        self, handler: RtmpConnectionHandler, peer: object, writer: asyncio.StreamWriter
    ) -> None:
        self.handler = handler
        self.settings = handler.settings
        self.peer = peer
        self.writer = writer
        self.conn = handler.new_connection()
        self.demuxer = FlvDemuxer()
        self.publication: Publication | None = None
        self.explicit_end = False

    async def serve(self, reader: asyncio.StreamReader, early: bytes = b"") -> None:
        """Serve the client until it leaves; `early`: its first bytes, already read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.rtmp_publish_deadline_seconds
        conn, peer = self.conn, self.peer
        try:
            while not conn.closed:
                timeout = self.handler.idle_timeout
                before_publish = self.publication is None
                if before_publish:
                    timeout = min(timeout, deadline - loop.time())
                try:
                    if timeout <= 0:  # a read of buffered bytes would not time out
                        raise TimeoutError
                    async with asyncio.timeout(timeout):
                        data = early or await reader.read(READ_SIZE)
                    early = b""
                except TimeoutError:
                    if before_publish and loop.time() >= deadline:
                        log.info(
                            "rtmp %s: no publish within %.0f s of connecting (handshake, "
                            "connect, publish), dropped",
                            peer,
                            self.settings.rtmp_publish_deadline_seconds,
                        )
                    else:
                        log.info("rtmp %s: idle for %.0f s, dropped", peer, timeout)
                    return
                try:
                    events = deque(conn.receive_data(data) if data else conn.receive_eof())
                except RtmpError as exc:
                    log.warning("rtmp %s: protocol error, connection closed: %s", peer, exc)
                    return
                await self._handle(events)
                await self._flush()
                if not data:
                    return
        except _WriteTimeoutError:
            log.info(
                "rtmp %s: took nothing we sent for %.0f s, dropped",
                peer,
                self.settings.rtmp_write_timeout_seconds,
            )
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("rtmp %s: connection lost: %s", peer, exc)

    async def _handle(self, events: deque[Event]) -> None:
        conn = self.conn
        while events:
            event = events.popleft()
            if isinstance(event, VideoMessage | AudioMessage):
                try:
                    self._push(event)
                except ValueError as exc:  # DemuxError, SegmenterError, Fmp4Error
                    await self._fail(exc)
                    return
            elif isinstance(event, PublishRequested):
                self.publication = await self._decide(event)
                await self._flush()
                if self.publication is not None:
                    self.handler.publishing[self.publication.grant.stream_id] = (
                        asyncio.current_task()
                    )
                    events.extend(conn.receive_data(b""))
            elif isinstance(event, StreamMetadata):
                if self.publication is not None:
                    self.publication.metadata.update(event.values)
            elif isinstance(event, PublishEnded):
                self.explicit_end = event.reason in EXPLICIT_UNPUBLISH

    def _push(self, event: VideoMessage | AudioMessage) -> None:
        assert self.publication is not None
        if isinstance(event, VideoMessage):
            items = self.demuxer.video(event.timestamp_ms, event.payload)
        else:
            items = self.demuxer.audio(event.timestamp_ms, event.payload)
        self.publication.push(items, len(event.payload))

    async def _fail(self, exc: ValueError) -> None:
        """Media that cannot be packaged: the publisher is told why and dropped; the
        session keeps its reconnect grace, and the reason is recorded on it."""
        assert self.publication is not None
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "rtmp %s: publisher of stream %s dropped: %s",
            self.peer,
            self.publication.grant.stream_id,
            reason,
        )
        self.conn.fail(f"publisher dropped: {reason}")
        await self._flush()
        report = {"protocol": "rtmp", "warnings": [f"the publisher was dropped: {reason}"]}
        await self.publication.record_report(report)

    async def _decide(self, event: PublishRequested) -> Publication | None:
        key = stream_key_from_rtmp(event.app, event.stream_name_without_query)
        publication, reason = await self.handler.publisher.begin(key, "rtmp")
        if publication is None:
            log.info("rtmp %s: publish refused: %s", self.peer, reason)
            self.conn.reject_publish(f"publish refused: {reason}")
            return None
        self.conn.accept_publish()
        return publication

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            try:
                async with asyncio.timeout(self.settings.rtmp_write_timeout_seconds):
                    await self.writer.drain()
            except TimeoutError:
                raise _WriteTimeoutError from None

    async def end(self, task: asyncio.Task[None], *, dropped: bool) -> None:
        """Store what the publish made and end it, then close the socket (abort it when the
        client does not take the last bytes in time)."""
        publication = self.publication
        if publication is not None:
            publishing = self.handler.publishing
            if publishing.get(publication.grant.stream_id) is task:
                del publishing[publication.grant.stream_id]
            await self.handler.publisher.end(publication, explicit=self.explicit_end or dropped)
        self.writer.close()
        try:
            async with asyncio.timeout(self.settings.rtmp_write_timeout_seconds):
                await self.writer.wait_closed()
        except TimeoutError:
            self.writer.transport.abort()
        except (ConnectionError, OSError):
            pass


async def serve_rtmp(
    handler: RtmpConnectionHandler, host: str, port: int, *, reuse_port: bool = False
) -> asyncio.Server:
    """`reuse_port`: share the port with this host's other ingest processes; the kernel
    hands each new connection to one of them."""
    return await asyncio.start_server(
        handler, host, port, limit=READ_SIZE, reuse_address=True, reuse_port=reuse_port
    )
