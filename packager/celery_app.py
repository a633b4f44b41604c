"""The Celery application: Redis as broker and result store, tuned so no task is lost."""

from __future__ import annotations

from celery import Celery

from core.settings import get_settings
from packager.enqueue import DEFAULT_QUEUE, UPLOAD_CHUNK_TASK, UPLOAD_QUEUE, UPLOAD_TASK

# Every module that defines tasks: a worker registers exactly these, so a task cannot
# exist only because some other module happened to import its module.
TASK_MODULES = [
    "packager.tasks.ladder",
    "packager.tasks.upload",
    "packager.tasks.upload_chunks",
    "packager.tasks.housekeeping",
]


def make_celery(redis_url: str | None) -> Celery:
    app = Celery(
        "nebula",
        broker=redis_url,
        backend=redis_url,
        include=TASK_MODULES,
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One task at a time per process: transcodes are seconds long and CPU bound, so
        # prefetching more would only park work behind a busy process.
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Only upload jobs rely on it: live ladder work lost with its worker is sent
            # again within seconds, when its lease lapses (packager/ladder_outbox.py).
            "visibility_timeout": 600,
            # A send connecting on demand tries twice, at once, instead of for seconds: the
            # ladder outbox sends again later, and sends with retries retry on their own.
            "max_retries": 1,
            "interval_start": 0,
        },
        worker_hijack_root_logger=False,
        task_default_queue=DEFAULT_QUEUE,
        # The ladder task is routed when it is sent (packager.enqueue.ladder_queue).
        task_routes={
            UPLOAD_TASK: {"queue": UPLOAD_QUEUE},
            UPLOAD_CHUNK_TASK: {"queue": UPLOAD_QUEUE},
        },
        # Needs a beat (`nebula-live worker` runs one embedded); the tasks are idempotent, so
        # several beats in a scaled-out deployment only repeat harmless work.
        beat_schedule={
            "expire-recordings": {"task": "nebula.expire_recordings", "schedule": 3600.0},
            "fail-stuck-uploads": {"task": "nebula.fail_stuck_uploads", "schedule": 3600.0},
        },
    )
    return app


celery_app = make_celery(get_settings().redis_url)
