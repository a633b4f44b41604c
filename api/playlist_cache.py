"""Rendered media playlists kept by version, so polling an unchanged playlist costs a few
indexed reads (`packager.playlist_versions`) instead of a render; and the last one served
under each URL, so most polls cost no query at all.

Each API process keeps its own, bounded in bytes, least recently used out first. Nothing
in it can hide a change another process made: a rendering is kept only under the version
read in its own snapshot, and the last one of a URL is served again only while no event
on its stream came since that snapshot (`api.stream_changes`), and for at most
`fresh_seconds` after it, the bound on a change whose event was lost.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from api.delivery import PlaylistBody
from api.kept_bytes import KeptBytes
from api.stream_changes import ChangeToken

# URLs whose last playlist is kept: each entry's body is most often also kept by version.
CURRENT_KEPT = 8192


@dataclass(frozen=True, slots=True)
class _Current:
    token: ChangeToken
    checked: float  # time.monotonic() of the token, read before the snapshot
    body: PlaylistBody


class PlaylistCache:
    def __init__(self, max_bytes: int, fresh_seconds: float = 0.0) -> None:
        self.max_bytes = max_bytes  # 0: keep nothing, render every request
        self.fresh_seconds = fresh_seconds  # 0: read the version on every request
        # One render per version at a time: the viewers that poll just after a segment
        # lands wait for that render instead of each making their own.
        self._versions: KeptBytes[PlaylistBody] = KeptBytes(max_bytes, lambda body: body.size)
        self._current: OrderedDict[str, _Current] = OrderedDict()
        self.unqueried = 0  # requests served the last rendering of their URL, no query made
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return self._versions.held_bytes

    @property
    def hits(self) -> int:
        """Requests served what was kept, without a render."""
        return self._versions.hits + self.unqueried

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

    def current(self, url: str, token: ChangeToken | None) -> PlaylistBody | None:
        """The playlist last served for `url`, if its stream has had no event since the
        snapshot it came from (`token` then and now the same) and that was less than
        `fresh_seconds` ago; None: ask the database."""
        if token is None or self.max_bytes <= 0 or self.fresh_seconds <= 0:
            return None
        with self._lock:
            kept = self._current.get(url)
            if kept is None or kept.token != token:
                return None
            if time.monotonic() - kept.checked >= self.fresh_seconds:
                return None
            self.unqueried += 1
            return kept.body

    def remember(
        self, url: str, token: ChangeToken | None, checked: float, body: PlaylistBody
    ) -> None:
        """`body` is what the database gave `url` in a snapshot begun after `token` was read,
        at `checked` (time.monotonic())."""
        if token is None or self.max_bytes <= 0 or self.fresh_seconds <= 0:
            return
        with self._lock:
            kept = self._current.get(url)
            if kept is not None and kept.checked > checked:
                return  # a request that began later was answered first: its is newer
            self._current[url] = _Current(token, checked, body)
            self._current.move_to_end(url)
            if len(self._current) > CURRENT_KEPT:
                self._current.popitem(last=False)
