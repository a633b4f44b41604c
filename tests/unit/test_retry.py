"""The one retry policy: transient faults are retried with doubling waits, anything else is
raised at once, and the last fault is raised once the tries or the time are spent. Polls are
retries of a check. No test sleeps: the sleep and the clock are fakes that record."""

from __future__ import annotations

import pytest
import redis
import urllib3
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.retry import TRANSIENT_ERRORS, PollTimeout, poll, retry
from core.storage import ObjectNotFoundError, StorageError


class FakeTime:
    """A clock that moves only when something sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class Failing:
    """Raises each of `errors` in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


TRANSIENT = [
    StorageError("put 'a' failed"),
    OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    PoolTimeoutError("QueuePool limit reached"),
    redis.ConnectionError("Connection refused"),
    urllib3.exceptions.MaxRetryError(None, "/bucket/key", "refused"),
    ConnectionResetError("reset by peer"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_each_transient_fault_is_retried(error: Exception, fake: FakeTime) -> None:
    assert isinstance(error, TRANSIENT_ERRORS)
    flaky = Failing(error)
    assert retry(flaky, attempts=2, base_delay=0.2, sleep=fake.sleep) == "done"
    assert flaky.calls == 2


def test_the_waits_double_from_the_base_delay_up_to_the_max_delay(fake: FakeTime) -> None:
    flaky = Failing(*[StorageError("down")] * 5)
    result = retry(flaky, attempts=6, base_delay=0.5, max_delay=3.0, sleep=fake.sleep)
    assert result == "done"
    assert fake.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "bug", [KeyError("rendition_id"), TypeError("unsupported operand"), ValueError("bad")]
)
def test_a_programming_error_is_raised_at_once_without_a_wait(
    bug: Exception, fake: FakeTime
) -> None:
    buggy = Failing(bug)
    with pytest.raises(type(bug)) as raised:
        retry(buggy, attempts=4, base_delay=0.2, sleep=fake.sleep)
    assert raised.value is bug
    assert (buggy.calls, fake.sleeps) == (1, [])


def test_a_missing_object_is_raised_at_once_though_it_is_a_storage_error(
    fake: FakeTime,
) -> None:
    missing = Failing(ObjectNotFoundError("hls/x/source/s/00000003.m4s"))
    with pytest.raises(ObjectNotFoundError):
        retry(missing, attempts=4, base_delay=0.2, sleep=fake.sleep)
    assert (missing.calls, fake.sleeps) == (1, [])


def test_once_the_attempts_are_spent_the_last_fault_is_raised(fake: FakeTime) -> None:
    faults = [StorageError(f"down {n}") for n in range(4)]
    flaky = Failing(*faults)
    with pytest.raises(StorageError) as raised:
        retry(flaky, attempts=4, base_delay=0.2, sleep=fake.sleep)
    assert raised.value is faults[-1]
    assert flaky.calls == 4
    assert fake.sleeps == [0.2, 0.4, 0.8]  # the source writer's waits


def test_a_timeout_stops_the_tries_even_with_attempts_left(fake: FakeTime) -> None:
    flaky = Failing(*[StorageError("starting")] * 100)
    with pytest.raises(StorageError):
        retry(
            flaky,
            timeout=30,
            base_delay=0.5,
            max_delay=0.5,
            sleep=fake.sleep,
            clock=fake.clock,
        )
    # Tried at 0, 0.5, ... 30 s: the try at the deadline is the last.
    assert flaky.calls == 61
    assert set(fake.sleeps) == {0.5}


def test_jitter_takes_at_most_its_fraction_off_each_wait(fake: FakeTime) -> None:
    flaky = Failing(*[StorageError("down")] * 40)
    retry(flaky, attempts=41, base_delay=1.0, max_delay=1.0, jitter=0.5, sleep=fake.sleep)
    assert all(0.5 <= wait <= 1.0 for wait in fake.sleeps)
    assert len(set(fake.sleeps)) > 1


def test_only_the_errors_named_in_on_are_retried(fake: FakeTime) -> None:
    flaky = Failing(LookupError("not yet"))
    assert retry(flaky, attempts=2, base_delay=1, on=(LookupError,), sleep=fake.sleep) == "done"
    with pytest.raises(StorageError):
        retry(Failing(StorageError("x")), attempts=2, base_delay=1, on=(LookupError,))


@pytest.mark.parametrize(
    "limits", [{}, {"attempts": 0}, {"attempts": 2, "jitter": 1.5}], ids=["none", "zero", "jitter"]
)
def test_a_retry_without_a_sensible_limit_is_refused(limits: dict) -> None:
    with pytest.raises(ValueError):
        retry(lambda: None, base_delay=1, **limits)


def test_a_poll_returns_once_its_check_holds_whatever_the_check_raised_before(
    fake: FakeTime,
) -> None:
    answers = iter([ConnectionRefusedError("refused"), False, KeyError("half-written"), True])

    def check() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    poll(check, timeout=60, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [0.2, 0.2, 0.2]


def test_a_poll_that_never_holds_times_out_with_the_last_error_it_saw(fake: FakeTime) -> None:
    answers = iter([OSError("refused")] + [False] * 1000)

    def check() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(PollTimeout) as timed_out:
        poll(check, timeout=10, interval=0.5, sleep=fake.sleep, clock=fake.clock)
    assert isinstance(timed_out.value, TimeoutError)
    assert isinstance(timed_out.value.last_error, OSError)
    assert str(timed_out.value) == "not ready after 10 s (last error: refused)"
    assert fake.now == pytest.approx(10.0)
