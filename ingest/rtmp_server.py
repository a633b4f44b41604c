"""The asyncio RTMP listener: reads sockets, feeds the sans-IO core, writes what it returns."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import deque

from core.settings import Settings
from ingest.publication import Publication
from ingest.publisher import Publisher
from ingest.rtmp.connection import ServerConnection
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.events import (
    AudioMessage,
    PublishEnded,
    PublishRequested,
    StreamMetadata,
    VideoMessage,
)
from media.demux.flv import DemuxError, FlvDemuxer

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
EXPLICIT_UNPUBLISH = {"FCUnpublish", "deleteStream", "closeStream"}


def stream_key_from_rtmp(app: str, stream_name: str) -> str:
    """`rtmp://host/live/KEY`: the key is the stream name; some clients put it in the app."""
    return stream_name or app.rpartition("/")[2]


class RtmpConnectionHandler:
    def __init__(self, publisher: Publisher, settings: Settings) -> None:
        self.publisher = publisher
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

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        self.connections.add(task)
        conn = self.new_connection()
        publication = None
        demuxer = FlvDemuxer()
        explicit_end = False
        try:
            while not conn.closed:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                except TimeoutError:
                    log.info("rtmp %s: idle for %.0f s, dropped", peer, self.idle_timeout)
                    break
                try:
                    events = deque(conn.receive_data(data) if data else conn.receive_eof())
                except RtmpError as exc:
                    log.warning("rtmp %s: protocol error, connection closed: %s", peer, exc)
                    break
                while events:
                    event = events.popleft()
                    if isinstance(event, VideoMessage):
                        publication.push(
                            demuxer.video(event.timestamp_ms, event.payload), len(event.payload)
                        )
                    elif isinstance(event, AudioMessage):
                        publication.push(
                            demuxer.audio(event.timestamp_ms, event.payload), len(event.payload)
                        )
                    elif isinstance(event, PublishRequested):
                        publication = await self._decide(conn, event, peer)
                        await _flush(conn, writer)
                        if publication is not None:
                            self.publishing[publication.grant.stream_id] = task
                            events.extend(conn.receive_data(b""))
                    elif isinstance(event, StreamMetadata):
                        if publication is not None:
                            publication.metadata.update(event.values)
                    elif isinstance(event, PublishEnded):
                        explicit_end = event.reason in EXPLICIT_UNPUBLISH
                await _flush(conn, writer)
                if not data:
                    break
        except DemuxError as exc:
            log.warning("rtmp %s: unreadable media, connection closed: %s", peer, exc)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("rtmp %s: connection lost: %s", peer, exc)
        finally:
            self.connections.discard(task)
            dropped = task in self._dropped
            self._dropped.discard(task)
            if publication is not None:
                if self.publishing.get(publication.grant.stream_id) is task:
                    del self.publishing[publication.grant.stream_id]
                await self.publisher.end(publication, explicit=explicit_end or dropped)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _decide(
        self, conn: ServerConnection, event: PublishRequested, peer: object
    ) -> Publication | None:
        key = stream_key_from_rtmp(event.app, event.stream_name_without_query)
        publication, reason = await self.publisher.begin(key, "rtmp")
        if publication is None:
            log.info("rtmp %s: publish refused: %s", peer, reason)
            conn.reject_publish(f"publish refused: {reason}")
            return None
        conn.accept_publish()
        return publication


async def _flush(conn: ServerConnection, writer: asyncio.StreamWriter) -> None:
    out = conn.data_to_send()
    if out:
        writer.write(out)
        await writer.drain()


async def serve_rtmp(handler: RtmpConnectionHandler, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(handler, host, port, limit=READ_SIZE, reuse_address=True)
