"""`nebula-live worker`: the Celery worker pools, one per kind of work.

The live ladder has processes of its own that consume only `nebula.live`. A Celery worker's
processes take work from whichever of their queues has some, so shared processes would let
the tasks of a long upload occupy every one of them while live segments wait. The batch pool
(uploads, webhooks, the housekeeping beat) runs niced, so that on a host running both, the
live ladder gets the CPU first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from enum import StrEnum

from core.settings import Settings, retention_off_warning
from core.webhooks import unsigned_webhooks_warning
from nebula_live.processes import die_with_parent
from packager.enqueue import DEFAULT_QUEUE, LIVE_QUEUE, UPLOAD_QUEUE

log = logging.getLogger(__name__)

# How long `all` waits for its live pool to finish its tasks when stopping.
LIVE_POOL_STOP_SECONDS = 60.0
# Before a pool that stopped on its own starts again.
POOL_RESTART_SECONDS = 1.0


class WorkerPool(StrEnum):
    ALL = "all"
    LIVE = "live"
    BATCH = "batch"


def celery_argv(settings: Settings, pool: WorkerPool) -> list[str]:
    """The `celery worker` arguments of one pool (live or batch)."""
    common = [
        "worker",
        f"--loglevel={settings.log_level}",
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.worker_max_memory_mb:
        # Checked after each task: a process that grew past it (a leak, a huge upload's
        # buffers) is replaced before it takes the next one.
        common.append(f"--max-memory-per-child={settings.worker_max_memory_mb * 1024}")
    if pool is WorkerPool.LIVE:
        return [
            *common,
            f"--concurrency={settings.live_workers}",
            f"--hostname=live-{os.getpid()}@%h",
            f"--queues={LIVE_QUEUE}",
        ]
    return [
        *common,
        f"--concurrency={settings.workers}",
        f"--hostname=worker-{os.getpid()}@%h",
        f"--queues={DEFAULT_QUEUE},{UPLOAD_QUEUE}",
        # The embedded beat schedules the retention sweep (see packager/celery_app.py).
        "--beat",
        f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
    ]


def run_worker(settings: Settings, pool: WorkerPool) -> int:
    """Run the pool(s) until stopped; returns the exit code. `all` runs the live pool as a
    child process (in our process group, and dying with us) beside the batch pool."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if pool is not WorkerPool.ALL:
        return _run_pool(settings, pool)
    live = subprocess.Popen(
        [sys.executable, "-m", "nebula_live.cli", "worker", "--pool", WorkerPool.LIVE.value],
        preexec_fn=die_with_parent,
    )
    stopping = threading.Event()

    def stop_with_the_live_pool() -> None:
        live.wait()
        if not stopping.is_set():
            log.error("the live worker pool exited (%s); stopping", live.returncode)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_with_the_live_pool, name="live-pool", daemon=True).start()
    try:
        _run_pool(settings, WorkerPool.BATCH)
    finally:
        stopping.set()
        live.terminate()
        try:
            live.wait(LIVE_POOL_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            live.kill()
    return 0 if live.returncode in (0, -signal.SIGTERM) else 1


def _run_pool(settings: Settings, pool: WorkerPool) -> int:
    """Run one pool until a signal stops it; returns Celery's exit code.

    A Celery worker that stops without being asked is started again: Celery 5.7 stops on
    an "unrecoverable" error when the broker connection drops while a task it has not
    acknowledged runs (the Redis transport cannot requeue it over the closed connection),
    and it does so with exit code 0. The work is not lost meanwhile (ladder tasks are sent
    again from the outbox, `packager.ladder_outbox`, the others come back from Redis's
    visibility timeout); a worker that stayed down would lose the pool for good, and
    `nebula-live up` would stop the whole stack with it. A worker that never got ready
    (a setting it refuses) is not started again: that would only repeat the failure."""
    from celery import signals

    from packager.celery_app import celery_app

    if pool is WorkerPool.BATCH:
        os.nice(settings.batch_worker_nice)  # inherited by the pool's processes
        # This pool delivers the webhooks and runs the retention sweep.
        for warning in (retention_off_warning(settings), unsigned_webhooks_warning(settings)):
            if warning:
                log.warning(warning)
    asked: list[str] = []
    ready: list[object] = []
    signals.worker_shutting_down.connect(lambda sig, **_: asked.append(sig), weak=False)
    signals.worker_ready.connect(lambda sender, **_: ready.append(sender), weak=False)
    while True:
        ready.clear()
        code = celery_app.start(celery_argv(settings, pool))
        if asked or not ready:
            return code or 0
        log.error(
            "the %s worker pool stopped without being asked (exit code %s); starting it again",
            pool.value,
            code,
        )
        time.sleep(POOL_RESTART_SECONDS)
