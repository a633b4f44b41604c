"""Celery entry points. They glue storage, database and the pure packaging code together."""

from __future__ import annotations

import os
import socket

from packager.celery_app import celery_app


@celery_app.task(name="nebula.ping")
def ping() -> dict[str, object]:
    """Answer who ran it: proves a worker consumes from the broker end to end."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}
