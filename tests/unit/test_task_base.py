"""Every task the worker registers shares one base: acknowledged late, requeued when its
worker dies, transient faults retried with backoff and jitter, the number of retries read
from the settings when the task runs, and a give-up step once they are spent."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
from celery import Celery, Task

from core.retry import TRANSIENT_ERRORS
from core.settings import get_settings
from core.storage import ObjectNotFoundError, StorageError
from core.webhooks import DELIVER_TASK
from packager.celery_app import TASK_MODULES, celery_app
from packager.enqueue import TRANSCODE_TASK, UPLOAD_CHUNK_TASK, UPLOAD_TASK
from packager.tasks.base import MediaTask

OUR_TASKS = {
    "nebula.ping",
    TRANSCODE_TASK,
    UPLOAD_TASK,
    UPLOAD_CHUNK_TASK,
    DELIVER_TASK,
    "nebula.expire_recordings",
    "nebula.fail_stuck_uploads",
}


@pytest.fixture(scope="module")
def registered() -> dict:
    for module in TASK_MODULES:
        importlib.import_module(module)
    return {name: task for name, task in celery_app.tasks.items() if name.startswith("nebula.")}


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_task_modules_register_exactly_our_tasks(registered: dict) -> None:
    assert set(registered) == OUR_TASKS
    assert {task.__module__ for task in registered.values()} == set(TASK_MODULES)


@pytest.mark.parametrize("name", sorted(OUR_TASKS))
def test_every_task_has_the_shared_options_from_the_base_and_sets_none_itself(
    registered: dict, name: str
) -> None:
    task = registered[name]
    assert isinstance(task, MediaTask)
    assert task.acks_late and task.reject_on_worker_lost
    assert task.retry_backoff and task.retry_jitter
    own = vars(type(task))  # what the decorator set: the name, the body, no flags
    for option in ("acks_late", "reject_on_worker_lost", "max_retries", "autoretry_for"):
        assert option not in own, option


@pytest.mark.parametrize("name", [TRANSCODE_TASK, UPLOAD_TASK, UPLOAD_CHUNK_TASK])
def test_media_tasks_retry_the_transient_faults(registered: dict, name: str) -> None:
    assert registered[name].autoretry_for == TRANSIENT_ERRORS
    assert registered[name].retry_backoff_max == 30


@pytest.mark.parametrize(
    ("name", "variable", "value", "retries"),
    [
        (TRANSCODE_TASK, "NEBULA_TRANSCODE_RETRIES", "7", 7),
        (UPLOAD_TASK, "NEBULA_UPLOAD_RETRIES", "2", 2),
        (UPLOAD_CHUNK_TASK, "NEBULA_UPLOAD_RETRIES", "2", 2),
        (DELIVER_TASK, "NEBULA_WEBHOOK_MAX_ATTEMPTS", "4", 3),
    ],
)
def test_max_retries_come_from_the_settings_when_the_task_runs_not_at_import(
    registered: dict,
    fresh_settings: None,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    variable: str,
    value: str,
    retries: int,
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    assert registered[name].max_retries == retries


def test_the_defaults_keep_the_retry_counts_of_before(
    registered: dict, fresh_settings: None
) -> None:
    counts = {name: registered[name].max_retries for name in (TRANSCODE_TASK, UPLOAD_TASK)}
    assert counts == {TRANSCODE_TASK: 5, UPLOAD_TASK: 3}
    assert registered[DELIVER_TASK].max_retries == 8 - 1  # eight attempts


class _Recording(MediaTask):
    max_retries = 2

    def on_retries_exhausted(self, exc: Exception, label: str) -> str:
        return f"{label} gave up after {self.request.retries} retries: {exc}"


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    app = Celery("test-base", set_as_current=False, broker="memory://", backend="cache+memory://")
    yield app
    app.close()


def _always_raising(app: Celery, error: Exception) -> tuple[Task, list[str]]:
    """A task on the base that raises `error` every time, and the labels it was called with."""
    calls: list[str] = []

    def body(label: str) -> str:
        calls.append(label)
        raise error

    return app.task(base=_Recording, name=f"test.{type(error).__name__}")(body), calls


def test_a_transient_fault_is_retried_then_given_up_with_the_tasks_own_result(
    app: Celery,
) -> None:
    task, calls = _always_raising(app, StorageError("store down"))
    result = task.apply(args=["segment 3"])  # eager: retries run at once, without waits
    assert result.get() == "segment 3 gave up after 2 retries: store down"
    assert calls == ["segment 3"] * 3


def test_a_programming_error_fails_the_task_at_once_without_a_retry_or_a_give_up(
    app: Celery,
) -> None:
    task, calls = _always_raising(app, KeyError("rendition_id"))
    result = task.apply(args=["segment 3"])
    assert result.failed()
    assert isinstance(result.result, KeyError)
    assert calls == ["segment 3"]


def test_a_missing_object_fails_the_task_at_once_though_it_is_a_storage_error(
    app: Celery,
) -> None:
    task, calls = _always_raising(app, ObjectNotFoundError("hls/x/source/s/00000003.m4s"))
    result = task.apply(args=["segment 3"])
    assert result.failed()
    assert isinstance(result.result, ObjectNotFoundError)
    assert calls == ["segment 3"]
