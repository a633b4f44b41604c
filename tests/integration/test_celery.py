"""A task travels through the real Redis broker to a real worker process."""

from __future__ import annotations

import os

from core.settings import Settings
from packager.celery_app import make_celery


def test_a_task_sent_through_redis_runs_in_a_separate_worker_process(
    settings: Settings, celery_worker: None
) -> None:
    app = make_celery(settings.redis_url)
    result = app.send_task("nebula.ping").get(timeout=30)
    assert result["pong"] is True
    assert result["pid"] != os.getpid()
