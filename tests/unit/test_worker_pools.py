"""Which queues each worker pool consumes: the live ladder's processes take nothing else;
both replace a process grown past the memory limit."""

from __future__ import annotations

import uuid

from core.settings import Settings
from nebula_live.worker_pools import WorkerPool, celery_argv
from packager.enqueue import LIVE_QUEUE, UPLOAD_QUEUE, ladder_queue


def _option(argv: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")), None)


def test_the_live_pool_consumes_only_the_live_queue_with_its_own_processes() -> None:
    argv = celery_argv(Settings(workers=4, live_workers=3), WorkerPool.LIVE)
    assert _option(argv, "queues") == LIVE_QUEUE
    assert _option(argv, "concurrency") == "3"
    assert "--beat" not in argv


def test_the_batch_pool_takes_uploads_and_the_default_queue_and_runs_the_beat() -> None:
    argv = celery_argv(Settings(workers=4, live_workers=3), WorkerPool.BATCH)
    assert set(_option(argv, "queues").split(",")) == {"nebula", UPLOAD_QUEUE}
    assert _option(argv, "concurrency") == "4"
    assert "--beat" in argv


def test_a_segment_s_ladder_goes_to_the_live_queue_only_when_its_session_has_a_stream() -> None:
    assert ladder_queue(uuid.uuid4()) == LIVE_QUEUE
    assert ladder_queue(None) == UPLOAD_QUEUE


def test_both_pools_replace_a_process_grown_past_the_memory_limit_unless_it_is_0() -> None:
    for pool in (WorkerPool.LIVE, WorkerPool.BATCH):
        argv = celery_argv(Settings(worker_max_memory_mb=512), pool)
        assert _option(argv, "max-memory-per-child") == str(512 * 1024)  # Celery counts KiB
        argv = celery_argv(Settings(worker_max_memory_mb=0), pool)
        assert _option(argv, "max-memory-per-child") is None
