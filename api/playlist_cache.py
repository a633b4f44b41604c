"""Rendered media playlists kept by version, so polling an unchanged playlist costs a few
indexed reads (`packager.playlist_versions`) instead of a render; and each URL's answer
under its stream's change token, so most polls cost no query at all.

Each API process keeps its own, bounded in bytes, least recently used out first. Nothing
in it can hide a change another process made: a rendering is kept only under the version
read in its own snapshot, and a URL's answer is served again only while no event on its
stream came since that snapshot (`api.stream_changes`), and for at most `fresh_seconds`
after it was made, the bound on a change whose event was lost.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from api.delivery import PlaylistBody
from api.kept_bytes import KeptBytes
from api.stream_changes import ChangeToken


class PlaylistCache:
    def __init__(self, max_bytes: int, fresh_seconds: float = 0.0) -> None:
        self.max_bytes = max_bytes  # 0: keep nothing, render every request
        self.fresh_seconds = fresh_seconds  # 0: read the version on every request
        # One render per version at a time: the viewers that poll just after a segment
        # lands wait for that render instead of each making their own.
        self._versions: KeptBytes[PlaylistBody] = KeptBytes(max_bytes, _size)
        # The answer of a URL under a change token: one database visit per token, however
        # many polls come while it is made; most often the same bodies as the versions'.
        self._current: KeptBytes[PlaylistBody] = KeptBytes(max_bytes, _size, fresh_seconds)

    @property
    def held_bytes(self) -> int:
        return self._versions.held_bytes

    @property
    def hits(self) -> int:
        """Requests served what was kept, without a render."""
        return self._versions.hits + self._current.hits

    @property
    def unqueried(self) -> int:
        """Of the hits, those that made no query (their URL's answer under its token)."""
        return self._current.hits

    @property
    def renders(self) -> int:
        """Renders made to be kept (not counted while it keeps nothing)."""
        return self._versions.made

    def body(self, version: Callable[[], str], render: Callable[[], str]) -> PlaylistBody:
        """The playlist kept under `version()`, or `render()` made and kept under it. Both
        must read the same snapshot of the database (`api.deps.SnapshotDb`)."""
        if self.max_bytes <= 0:
            return PlaylistBody(render())

        def rendered() -> PlaylistBody:
            body = PlaylistBody(render())
            body.gzipped()  # made now, so what an entry holds never grows
            return body

        return self._versions.get_or_make(version(), rendered)

    async def answer(
        self, url: str, token: ChangeToken | None, answer: Callable[[], PlaylistBody]
    ) -> PlaylistBody:
        """What `url` answered under `token` (its stream had no event since the snapshot
        that answer came from), made less than `fresh_seconds` ago: at once, on the event
        loop. Else `answer()`, run in a worker thread (it must read a snapshot begun after
        `token` was read) and kept as it; the polls that come while it runs await the same
        one. Without a token (events may be going unseen) every call asks `answer()`."""
        if not self._evented(token):
            return await run_in_threadpool(answer)
        return await self._current.get_or_make_awaiting(_current_key(url, token), answer)

    def _evented(self, token: ChangeToken | None) -> bool:
        return token is not None and self.max_bytes > 0 and self.fresh_seconds > 0


def _size(body: PlaylistBody) -> int:
    return body.size


def _current_key(url: str, token: ChangeToken | None) -> str:
    return f"{url} {token}"
