"""Segments and init segments this API process fetched from the bucket lately, by key.

Every viewer of a live stream asks for the same few objects at its edge; kept here, one GET
to the bucket serves them all, where the proxy otherwise made one per viewer and request.
A media key is written once and never changed (a late rung result gets a key no playlist
listed as media before), so nothing kept can be stale; an entry lives at most
`KEPT_SECONDS`, so a recording deleted through the API stops being served here soon after
(another process cannot tell this one it is gone)."""

from __future__ import annotations

from collections.abc import Callable

from api.kept_bytes import KeptBytes

KEPT_SECONDS = 60.0


class MediaCache:
    def __init__(self, max_bytes: int) -> None:
        self._objects: KeptBytes[bytes] = KeptBytes(max_bytes, len, KEPT_SECONDS)

    @property
    def held_bytes(self) -> int:
        return self._objects.held_bytes

    @property
    def hits(self) -> int:
        return self._objects.hits

    @property
    def fetches(self) -> int:
        """Objects fetched from the bucket (those that were found)."""
        return self._objects.made

    async def get(self, key: str, fetch: Callable[[], bytes]) -> bytes:
        """The object at `key`: a kept one at once, on the event loop (a viewer at the live
        edge waits for no thread), else `fetch()`ed in a worker thread once for everyone
        asking meanwhile; a fetch that raises (not found, the bucket away) keeps nothing."""
        return await self._objects.get_or_make_awaiting(key, fetch)
