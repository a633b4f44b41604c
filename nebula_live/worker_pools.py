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
from enum import StrEnum

from core.settings import Settings, retention_off_warning
from core.webhooks import unsigned_webhooks_warning
from nebula_live.processes import die_with_parent
from packager.enqueue import DEFAULT_QUEUE, LIVE_QUEUE, UPLOAD_QUEUE

log = logging.getLogger(__name__)

# How long `all` waits for its live pool to finish its tasks when stopping.
LIVE_POOL_STOP_SECONDS = 60.0


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
        _run_pool(settings, pool)
        return 0
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


def _run_pool(settings: Settings, pool: WorkerPool) -> None:
    from packager.celery_app import celery_app

    if pool is WorkerPool.BATCH:
        os.nice(settings.batch_worker_nice)  # inherited by the pool's processes
        # This pool delivers the webhooks and runs the retention sweep.
        for warning in (retention_off_warning(settings), unsigned_webhooks_warning(settings)):
            if warning:
                log.warning(warning)
    celery_app.worker_main(celery_argv(settings, pool))
