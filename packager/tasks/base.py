"""The base of every nebula task: how it is acknowledged, retried and given up.

Each task declares `@celery_app.task(base=MediaTask, name=...)` (or a subclass of it that
says how many retries and how to give up), so its body is the work alone.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Task
from redis import Redis

from core.retry import PERMANENT_ERRORS, TRANSIENT_ERRORS
from core.settings import get_settings
from core.storage import ObjectStore


class MediaTask(Task):
    """Acknowledged late and requeued if its worker dies: every task is idempotent, so a
    redelivery after a lost (OOM-killed, SIGKILLed) worker redoes the work instead of
    losing it.

    A fault of the services around it (`TRANSIENT_ERRORS`) is retried by Celery with
    exponential backoff and full jitter: up to 1 s, 2 s, 4 s ... at most
    `retry_backoff_max`, `max_retries` times (Celery's 3 unless a subclass reads its number
    from the settings, when a retry is decided, never at import). Once the retries are
    spent, `on_retries_exhausted` records the failure the task's own way. Any other error
    is the task's to handle; one it lets through (a bug) fails the task at once.
    """

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = PERMANENT_ERRORS
    retry_backoff = True
    retry_backoff_max = 30
    retry_jitter = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except self.dont_autoretry_for:
            raise
        except self.autoretry_for as exc:
            # Only once the retries are spent (or at once when called outside a worker):
            # until then Celery's autoretry raised Retry instead.
            return self.on_retries_exhausted(exc, *args, **kwargs)

    def on_retries_exhausted(self, exc: Exception, *args: Any, **kwargs: Any) -> Any:
        """Record that the task gave up on `exc` and return its result; by default the task
        fails with `exc`."""
        raise exc


@cache
def worker_services() -> tuple[ObjectStore, Redis]:
    """The worker process's object store and Redis clients, made once."""
    settings = get_settings()
    return ObjectStore.from_settings(settings), Redis.from_url(settings.redis_url)
