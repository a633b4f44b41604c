"""Websocket fan-out: one Redis subscription per API process feeds every client it serves.

Each client gets a bounded queue. The Redis reader only ever does `put_nowait`, so a client
that stops reading fills its own queue and is dropped; nobody else waits for it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from api.stream_changes import StreamChanges
from core.events import (
    STREAM_CHANNEL_PATTERN,
    STREAM_CHANNEL_PREFIX,
    UPLOAD_CHANNEL_PATTERN,
    follow_channels,
    stop_following,
)


@dataclass(eq=False)
class Subscriber:
    """One websocket client's view of one Redis channel (a stream's or an upload's)."""

    channel: str
    queue: asyncio.Queue[str]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, message: str) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed.set()


class AddressSlots:
    """Websockets open per client address in this process, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    @contextmanager
    def held(self, address: str) -> Iterator[bool]:
        """Whether `address` had a slot free; a slot taken is given back when the block ends."""
        if self._open.get(address, 0) >= self.limit:
            yield False
            return
        self._open[address] = self._open.get(address, 0) + 1
        try:
            yield True
        finally:
            self._open[address] -= 1
            if not self._open[address]:
                del self._open[address]


class EventHub:
    """The process's subscription: events go to the websocket clients that follow their
    channel, and every stream's tell `changes` its playlists moved."""

    def __init__(self, redis_url: str, queue_size: int, changes: StreamChanges) -> None:
        self.redis_url = redis_url
        self.queue_size = queue_size
        self.changes = changes
        self.subscribed = asyncio.Event()
        self._clients: dict[str, set[Subscriber]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @property
    def client_count(self) -> int:
        return sum(len(clients) for clients in self._clients.values())

    def start(self) -> None:
        """Subscribe to every stream and upload channel: a pattern subscription costs Redis
        the same for one stream or thousands, and this process drops events nobody here
        watches."""
        self._task = asyncio.create_task(
            follow_channels(
                self.redis_url,
                self._dispatch,
                patterns=[STREAM_CHANNEL_PATTERN, UPLOAD_CHANNEL_PATTERN],
                on_subscribed=self._subscribed,
                on_lost=self.changes.lost,
            ),
            name="event-hub",
        )

    async def stop(self) -> None:
        if self._task is not None:
            await stop_following(self._task)
        self.changes.lost()

    def _subscribed(self) -> None:
        self.changes.subscribed()
        self.subscribed.set()

    def join(self, channel: str) -> Subscriber:
        subscriber = Subscriber(channel, asyncio.Queue(self.queue_size))
        self._clients[channel].add(subscriber)
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        clients = self._clients.get(subscriber.channel)
        if clients is not None:
            clients.discard(subscriber)
            if not clients:
                del self._clients[subscriber.channel]

    def _dispatch(self, channel: str, data: str) -> None:
        if channel.startswith(STREAM_CHANNEL_PREFIX):
            self.changes.changed(channel)
        for subscriber in self._clients.get(channel, ()):
            subscriber.offer(data)
