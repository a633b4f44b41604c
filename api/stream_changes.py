"""Which streams changed, as their event channels say: what lets an API process serve a
media playlist it rendered a moment ago without asking PostgreSQL whether it still holds.

Every write that changes a stream's playlists is followed, once committed, by an event on
the stream's channel (`packager.mirror` mirrors the playlists and publishes one; the
ingest publishes the live and idle ones). The process's one pattern subscription
(`api.ws.EventHub`) hands each here, and the stream's generation moves. A token read
before a render's snapshot and equal to the one read now means no event came since that
snapshot began. Pub/sub may drop messages while the subscription is down, so there is no
token then, and the epoch moves each time it is made again: nothing taken before a gap
passes for current after it.
"""

from __future__ import annotations

import itertools
import uuid

from core.events import stream_channel

ChangeToken = tuple[int, int]


class StreamChanges:
    """Fed and read on the event loop (the subscription and the playlist route). Every
    number comes from one counter, so no token is ever given twice for different moments."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._epoch = 0
        self._generations: dict[str, int] = {}
        self._following = False

    def subscribed(self) -> None:
        """The subscription is (again) in place: every token from before is stale."""
        self._generations.clear()
        self._epoch = next(self._numbers)
        self._following = True

    def lost(self) -> None:
        self._following = False

    def changed(self, channel: str) -> None:
        """An event came on `channel`; the sender committed what it tells of before."""
        self._generations[channel] = next(self._numbers)

    def token(self, stream_id: uuid.UUID) -> ChangeToken | None:
        """The stream's change token now; None while events may be going unseen."""
        if not self._following:
            return None
        return self._epoch, self._generations.get(stream_channel(stream_id), 0)
