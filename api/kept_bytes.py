"""A bounded store of values by key, least recently used out first, that makes each missing
value once however many ask for it at the same moment: what the playlist cache and the
media cache of an API process share."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

V = TypeVar("V")


class KeptBytes(Generic[V]):
    """At most `max_bytes` (as `size_of` counts them) of values, each for at most `max_age`
    seconds. Thread-safe: values are made in worker threads and read on the event loop."""

    def __init__(
        self, max_bytes: int, size_of: Callable[[V], int], max_age: float = math.inf
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._size_of = size_of
        self._values: OrderedDict[str, tuple[float, int, V]] = OrderedDict()  # made at, size
        self._held = 0
        self.hits = 0  # values served as kept
        self.made = 0  # values made to be kept
        self._lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}
        self._awaited: dict[str, asyncio.Future[V]] = {}  # touched on the event loop only

    @property
    def held_bytes(self) -> int:
        return self._held

    def get(self, key: str) -> V | None:
        """The value kept under `key`, if any; never waits for a maker (safe on the event
        loop)."""
        with self._lock:
            return self._kept(key)

    def get_or_make(self, key: str, make: Callable[[], V]) -> V:
        """The value kept under `key`, or `make()` kept under it. Callers asking for the same
        missing key together wait for one `make()`; one that raises keeps nothing, and the
        next caller makes it again."""
        with self._lock:
            kept = self._kept(key)
            if kept is not None:
                return kept
            making = self._making.setdefault(key, threading.Lock())
        with making:
            try:
                with self._lock:
                    kept = self._kept(key)
                    if kept is not None:
                        return kept
                value = make()
                with self._lock:
                    self.made += 1
                    self._keep(key, value)
                return value
            finally:
                with self._lock:
                    self._making.pop(key, None)

    async def get_or_make_awaiting(self, key: str, make: Callable[[], V]) -> V:
        """`get_or_make` from the event loop: the first caller's `make()` runs in a worker
        thread and every caller meanwhile awaits it holding no thread (blocked on a lock
        they would fill the threadpool, and every other request would queue behind them:
        bench/viewer_load.py, 3,000 viewers, p99 10.7 s)."""
        kept = self.get(key)
        if kept is not None:
            return kept
        made = self._awaited.get(key)
        if made is None:
            made = asyncio.ensure_future(run_in_threadpool(self.get_or_make, key, make))
            self._awaited[key] = made
            made.add_done_callback(partial(self._made, key))
        return await asyncio.shield(made)  # a caller that goes away leaves it to the others

    def _made(self, key: str, made: asyncio.Future[V]) -> None:
        self._awaited.pop(key, None)
        if not made.cancelled():
            made.exception()  # each awaiting caller got it; none left is no one to tell

    def _kept(self, key: str) -> V | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        made_at, size, value = entry
        if time.monotonic() - made_at >= self.max_age:
            del self._values[key]
            self._held -= size
            return None
        self._values.move_to_end(key)
        self.hits += 1
        return value

    def _keep(self, key: str, value: V) -> None:
        size = self._size_of(value)
        if size > self.max_bytes:
            return
        previous = self._values.pop(key, None)
        if previous is not None:
            self._held -= previous[1]
        self._values[key] = (time.monotonic(), size, value)
        self._held += size
        while self._held > self.max_bytes:
            _, (_, dropped, _) = self._values.popitem(last=False)
            self._held -= dropped
