"""What other processes queue for the workers: the task names and the calls that send them.

Cheap to import (no task bodies, no PyAV): the ingest and the API queue work through here,
and only `nebula-live worker` loads the tasks themselves (`packager.celery_app` lists them).
Only ids go through the broker; the media stays in the object store.
"""

from __future__ import annotations

import uuid

from celery import Celery

TRANSCODE_TASK = "nebula.transcode_segment"
UPLOAD_TASK = "nebula.process_upload"
UPLOAD_CHUNK_TASK = "nebula.package_upload_chunk"


def enqueue_ladder(celery: Celery, session_id: uuid.UUID, sequence: int) -> None:
    """Queue the rungs of one closed source segment."""
    celery.send_task(TRANSCODE_TASK, args=[str(session_id), sequence])


def enqueue_upload(celery: Celery, upload_id: uuid.UUID) -> None:
    """Queue the job that packages a stored upload."""
    celery.send_task(UPLOAD_TASK, args=[str(upload_id)])
