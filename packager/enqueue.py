"""What other processes queue for the workers: the task names, the queues and the calls that
send them.

Cheap to import (no task bodies, no PyAV): the ingest and the API queue work through here,
and only `nebula-live worker` loads the tasks themselves (`packager.celery_app` lists them).
Only ids go through the broker; the media stays in the object store.

Live ladder work has a queue of its own, consumed by worker processes of its own
(`nebula-live worker --pool live`), so the thousands of tasks of a long upload never sit
ahead of a live segment's rungs. Everything else shares the default queue or the uploads one.
"""

from __future__ import annotations

import uuid

from celery import Celery

TRANSCODE_TASK = "nebula.transcode_segment"
UPLOAD_TASK = "nebula.process_upload"
UPLOAD_CHUNK_TASK = "nebula.package_upload_chunk"

DEFAULT_QUEUE = "nebula"
LIVE_QUEUE = "nebula.live"
UPLOAD_QUEUE = "nebula.uploads"


def ladder_queue(stream_id: uuid.UUID | None) -> str:
    """The same transcode task, routed by whether its session is a stream's (live) or an
    uploaded file's."""
    return LIVE_QUEUE if stream_id is not None else UPLOAD_QUEUE


def enqueue_ladder(celery: Celery, session_id: uuid.UUID, sequence: int, queue: str) -> None:
    """Send the rungs of one closed source segment, once: no retries here, as the outbox
    (`packager.ladder_outbox`) sends again what the broker did not take. No result is kept:
    the rows are the result, and a sender waiting on the result store would hang in its
    reconnect loop while Redis is down."""
    celery.send_task(
        TRANSCODE_TASK,
        args=[str(session_id), sequence],
        queue=queue,
        retry=False,
        ignore_result=True,
    )


def enqueue_upload(celery: Celery, upload_id: uuid.UUID) -> None:
    """Queue the job that packages a stored upload."""
    celery.send_task(UPLOAD_TASK, args=[str(upload_id)])
