"""`KeyGate`: the stream key check of SRT handshakes, cheapest refusal first.

libsrt calls the listen callback on its one receive thread, so every handshake on the port
waits while a key is checked, and so does the media of every live SRT publisher. A flood of
handshakes with junk keys must therefore cost next to nothing each:

1. a key that does not have the shape of the keys we hand out (`core.stream_keys`) is
   refused without a lookup;
2. a key the database did not know is remembered for `cache_seconds` (at most `cache_size`
   of them, oldest first out) and refused again without a lookup;
3. at most `workers` lookups run at once; a handshake that finds them all busy (the
   database is slow, or a flood of well-formed keys) is refused at once instead of queueing
   behind them. A lookup that takes longer than `timeout` is refused too, but keeps its
   place until it finishes, so a hung database cannot pile up threads.

Only unknown keys are cached: a disabled stream may be enabled again at any moment.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from core.stream_keys import KEY_ALPHABET, KEY_LENGTH, hash_stream_key, is_well_formed
from ingest.sessions import PublishRefusedError, UnknownStreamKeyError
from ingest.srt.libsrt import RejectReason


class KeyRefusedError(Exception):
    """The handshake is refused: `reason` is the SRT_REJX code the caller gets, the message
    what the log says (never the key itself)."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeyGate:
    def __init__(
        self,
        check: Callable[[str], None],
        *,
        workers: int,
        timeout: float,
        cache_size: int,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`check(key)` returns if a publish with the key may go ahead and raises
        `PublishRefusedError` (`UnknownStreamKeyError` for a key no stream has) if not."""
        self._check = check
        self._workers = workers
        self._timeout = timeout
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "srt-key-check")
        self._slots = threading.BoundedSemaphore(workers)
        self._unknown: OrderedDict[str, float] = OrderedDict()  # key digest -> refused until
        self._lock = threading.Lock()

    def admit(self, key: str) -> None:
        """Return if the key may publish; raise `KeyRefusedError` saying why not."""
        if not is_well_formed(key):
            raise KeyRefusedError(
                RejectReason.FORBIDDEN,
                f"malformed stream key ({len(key)} characters; expected {KEY_LENGTH} of "
                f"{KEY_ALPHABET}), not looked up",
            )
        digest = hash_stream_key(key)
        if self._known_unknown(digest):
            raise KeyRefusedError(
                RejectReason.FORBIDDEN,
                f"unknown stream key, refused again within {self._cache_seconds:.0f} s "
                "without a lookup",
            )
        if not self._slots.acquire(blocking=False):
            raise KeyRefusedError(
                RejectReason.ISE,
                f"all {self._workers} key checks busy; refused at once instead of waiting",
            )
        try:
            future = self._executor.submit(self._check, key)
        except RuntimeError:  # shut down
            self._slots.release()
            raise KeyRefusedError(RejectReason.ISE, "the listener is stopping") from None
        future.add_done_callback(lambda _: self._slots.release())
        try:
            future.result(self._timeout)
        except UnknownStreamKeyError as exc:
            self._remember_unknown(digest)
            raise KeyRefusedError(RejectReason.FORBIDDEN, str(exc)) from None
        except PublishRefusedError as exc:
            raise KeyRefusedError(RejectReason.FORBIDDEN, str(exc)) from None
        except concurrent.futures.TimeoutError:
            raise KeyRefusedError(
                RejectReason.ISE, f"key check took longer than {self._timeout:.1f} s"
            ) from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _known_unknown(self, digest: str) -> bool:
        with self._lock:
            until = self._unknown.get(digest)
            if until is None:
                return False
            if self._clock() < until:
                return True
            del self._unknown[digest]
            return False

    def _remember_unknown(self, digest: str) -> None:
        with self._lock:
            self._unknown.pop(digest, None)
            self._unknown[digest] = self._clock() + self._cache_seconds
            while len(self._unknown) > self._cache_size:
                self._unknown.popitem(last=False)
