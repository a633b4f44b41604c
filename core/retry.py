"""One retry policy: which faults are worth another try, and how long to wait between tries.

A fault of the services around us (the object store, PostgreSQL, Redis, the network to
them) often passes within seconds, so it is retried with exponential backoff. Anything
else (a `KeyError`, a `TypeError`, a segment that does not decode) fails the same way
every time, so it is raised at once instead of being retried with sleeps in between.
Celery tasks get the same list through `packager.tasks.base.MediaTask`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3
from redis import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.storage import ObjectNotFoundError, StorageError

T = TypeVar("T")

# Faults of the services around us: worth retrying, unlike a bug or media that does not
# decode. urllib3's and the builtin connection errors are the object store's transport
# failing where core.storage does not wrap it in StorageError; a pool timeout is a busy
# database, not a broken one.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    StorageError,
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    RedisError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)
# Raised by the object store, but no retry brings a missing object back.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (ObjectNotFoundError,)


def retry(
    fn: Callable[[], T],
    *,
    attempts: int | None = None,
    timeout: float | None = None,
    base_delay: float,
    max_delay: float = math.inf,
    jitter: float = 0.0,
    on: tuple[type[Exception], ...] = TRANSIENT_ERRORS,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`fn()`, tried again after each error in `on`: at most `attempts` times, or until
    `timeout` seconds have passed, whichever comes first; the last error is raised.

    The waits double from `base_delay` up to `max_delay`. `jitter` (0 to 1) takes up to that
    fraction off each wait at random, so clients that failed together do not all come back
    at the same instant. Errors not in `on`, and `PERMANENT_ERRORS`, are raised at once:
    retrying a bug or a missing object only delays it. `sleep` and `clock` are there for tests.
    """
    if attempts is None and timeout is None:
        raise ValueError("retry needs attempts, a timeout, or both")
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts={attempts} must be at least 1")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter={jitter} must be between 0 and 1")
    deadline = None if timeout is None else clock() + timeout
    delay, tried = min(base_delay, max_delay), 0
    while True:
        try:
            return fn()
        except PERMANENT_ERRORS:
            raise
        except on:
            tried += 1
            if attempts is not None and tried >= attempts:
                raise
            if deadline is not None and clock() >= deadline:
                raise
        sleep(delay * (1.0 - jitter * random.random()))
        delay = min(delay * 2, max_delay)


class PollTimeout(TimeoutError):
    """What was polled did not come true in time; `last_error` is what it last raised."""

    def __init__(self, timeout: float, last_error: Exception | None) -> None:
        super().__init__(f"not ready after {timeout} s (last error: {last_error})")
        self.timeout = timeout
        self.last_error = last_error


class _NotYet(Exception):
    """The poll's check answered False."""


def poll(
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.2,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call `check` every `interval` seconds until it returns True; `PollTimeout` after
    `timeout` seconds.

    An error from `check` counts as "not yet", whatever its type: a service that is still
    starting fails in whichever way its client library chooses (refused, reset, a 503, a
    half-written file). The last one is kept for the timeout's message."""
    last_error: Exception | None = None

    def ready() -> None:
        nonlocal last_error
        try:
            done = check()
        except Exception as exc:
            last_error = exc
            raise
        if not done:
            raise _NotYet

    try:
        retry(
            ready,
            timeout=timeout,
            base_delay=interval,
            max_delay=interval,
            on=(Exception,),
            sleep=sleep,
            clock=clock,
        )
    except Exception as exc:
        raise PollTimeout(timeout, last_error) from exc
