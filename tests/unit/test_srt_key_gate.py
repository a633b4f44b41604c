"""The SRT key gate refuses the cheap cases without a lookup, and never queues a handshake
behind busy lookups. The lookup is a function of the test's (it records its calls and can
be held on an Event), so what reaches the database is counted exactly."""

from __future__ import annotations

import threading

import pytest

from core.stream_keys import new_stream_key
from ingest.sessions import PublishRefusedError, UnknownStreamKeyError
from ingest.srt.key_gate import KeyGate, KeyRefusedError
from ingest.srt.libsrt import RejectReason
from tests.services import wait_for


class Lookups:
    """A stand-in database: `known` keys pass, `disabled` ones are refused, others unknown."""

    def __init__(self, *known: str, disabled: tuple[str, ...] = ()) -> None:
        self.known = set(known)
        self.disabled = set(disabled)
        self.calls: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Semaphore(0)

    def __call__(self, key: str) -> None:
        self.calls.append(key)
        self.started.release()
        self.release.wait(10)
        if key in self.disabled:
            raise PublishRefusedError("stream is disabled")
        if key not in self.known:
            raise UnknownStreamKeyError("unknown stream key")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(lookups: Lookups, clock: Clock | None = None, **overrides) -> KeyGate:
    options = {"workers": 2, "timeout": 5.0, "cache_size": 8, "cache_seconds": 60.0}
    return KeyGate(lookups, clock=clock or Clock(), **(options | overrides))


@pytest.mark.parametrize("key", ["", "short", "x" * 33, "a" * 31 + "!", "ü" * 32])
def test_a_malformed_key_is_refused_without_a_lookup(key: str) -> None:
    lookups = Lookups()
    with pytest.raises(KeyRefusedError) as refused:
        gate(lookups).admit(key)
    assert refused.value.reason is RejectReason.FORBIDDEN
    assert f"malformed stream key ({len(key)} characters; expected 32 of" in str(refused.value)
    assert key not in str(refused.value) or not key
    assert lookups.calls == []


def test_a_known_key_is_admitted_after_one_lookup() -> None:
    key = new_stream_key()
    lookups = Lookups(key)
    gate(lookups).admit(key)
    assert lookups.calls == [key]


def test_an_unknown_key_is_looked_up_once_then_refused_from_the_cache_until_it_expires() -> None:
    key, clock = new_stream_key(), Clock()
    lookups = Lookups()
    keys = gate(lookups, clock)
    for _ in range(3):
        with pytest.raises(KeyRefusedError) as refused:
            keys.admit(key)
        assert refused.value.reason is RejectReason.FORBIDDEN
    assert "refused again within 60 s without a lookup" in str(refused.value)
    assert lookups.calls == [key]
    clock.now += 61
    with pytest.raises(KeyRefusedError, match="unknown stream key"):
        keys.admit(key)
    assert lookups.calls == [key, key]


def test_a_disabled_stream_is_not_cached_it_may_be_enabled_again() -> None:
    key = new_stream_key()
    lookups = Lookups(disabled=(key,))
    keys = gate(lookups)
    for _ in range(2):
        with pytest.raises(KeyRefusedError, match="stream is disabled"):
            keys.admit(key)
    assert lookups.calls == [key, key]


def test_the_cache_keeps_only_the_newest_unknown_keys() -> None:
    lookups = Lookups()
    keys = gate(lookups, cache_size=2)
    first, second, third = (new_stream_key() for _ in range(3))
    for key in (first, second, third, first):
        with pytest.raises(KeyRefusedError):
            keys.admit(key)
    assert lookups.calls == [first, second, third, first]  # first had been pushed out


def test_with_every_lookup_busy_a_handshake_is_refused_at_once_and_admitted_after() -> None:
    key = new_stream_key()
    lookups = Lookups(key)
    lookups.release.clear()  # the database hangs
    keys = gate(lookups, workers=2, timeout=0.05)
    for _ in range(2):
        with pytest.raises(KeyRefusedError, match="key check took longer than 0.1 s"):
            keys.admit(key)
    assert lookups.started.acquire(timeout=5) and lookups.started.acquire(timeout=5)
    with pytest.raises(KeyRefusedError) as refused:
        keys.admit(key)
    assert refused.value.reason is RejectReason.ISE
    assert "all 2 key checks busy; refused at once" in str(refused.value)
    assert len(lookups.calls) == 2  # the third never reached the database
    lookups.release.set()  # the database answers again: the hung lookups end, their
    # slots come back, and the same gate admits the key
    wait_for(lambda: _admitted(keys, key), 5, "a lookup slot free again")
    assert len(lookups.calls) == 3


def _admitted(keys: KeyGate, key: str) -> bool:
    try:
        keys.admit(key)
    except KeyRefusedError as refused:
        assert "busy" in str(refused)
        return False
    return True
