"""A bounded store of values by key, least recently used out first, that makes each missing
value once however many ask for it at the same moment: what the playlist cache and the
media cache of an API process share."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class KeptBytes(Generic[V]):
    """At most `max_bytes` (as `size_of` counts them) of values, each for at most `max_age`
    seconds. Thread-safe: the routes that use it run in the threadpool."""

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
