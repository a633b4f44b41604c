"""Rendered media playlists kept by version, so polling an unchanged playlist costs a few
indexed reads (`packager.playlist_versions`) instead of a render.

Each API process keeps its own, bounded in bytes, least recently used out first. Nothing
in it can hide a change another process made: the version comes from the database on
every request, and a rendering is kept only under the version read in its own snapshot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from api.delivery import PlaylistBody


class PlaylistCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # 0: keep nothing, render every request
        self._bodies: OrderedDict[str, PlaylistBody] = OrderedDict()
        self._held = 0
        self.hits = 0  # requests served what was kept
        self.renders = 0  # renders made to be kept (not counted while it keeps nothing)
        self._lock = threading.Lock()
        # One render per version at a time: the viewers that poll just after a segment
        # lands wait for that render instead of each making their own.
        self._rendering: dict[str, threading.Lock] = {}

    @property
    def held_bytes(self) -> int:
        return self._held

    def body(self, version: Callable[[], str], render: Callable[[], str]) -> PlaylistBody:
        """The playlist kept under `version()`, or `render()` made and kept under it. Both
        must read the same snapshot of the database (`api.deps.SnapshotDb`)."""
        if self.max_bytes <= 0:
            return PlaylistBody(render())
        key = version()
        with self._lock:
            kept = self._kept(key)
            if kept is not None:
                self.hits += 1
                return kept
            rendering = self._rendering.setdefault(key, threading.Lock())
        with rendering:
            try:
                with self._lock:
                    kept = self._kept(key)
                    if kept is not None:
                        self.hits += 1
                        return kept
                body = PlaylistBody(render())
                body.gzipped()  # made now, so what an entry holds never grows
                with self._lock:
                    self.renders += 1
                    self._keep(key, body)
                return body
            finally:
                with self._lock:
                    self._rendering.pop(key, None)

    def _kept(self, key: str) -> PlaylistBody | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def _keep(self, key: str, body: PlaylistBody) -> None:
        if body.size > self.max_bytes:
            return
        self._bodies[key] = body
        self._held += body.size
        while self._held > self.max_bytes:
            _, dropped = self._bodies.popitem(last=False)
            self._held -= dropped.size
