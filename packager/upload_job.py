"""The upload job: the stored file becomes the source rendition of its session, segment by
segment; each segment queues the ladder task as a live segment does, so every worker shares
the rungs of a long file while this job is still packaging it.

The job reads the file from the bucket through ranged GETs (no local copy) and deletes it
once the source rendition is complete, or the upload has failed: the segments are the media
from then on.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import av
from celery import Task
from redis.exceptions import LockError
from redis.lock import Lock
from sqlalchemy import delete

from core.db import session_scope
from core.models import LiveSession, Rendition, Upload
from core.settings import Settings, get_settings
from core.storage import ObjectStore
from ingest.publication import SourceWriter
from packager.celery_app import celery_app
from packager.live import LivePackager, PackagedSegment
from packager.tasks import MAX_RETRY_DELAY_SECONDS, TRANSIENT_ERRORS, worker_services
from packager.transcode import EncoderOptions
from packager.upload_probe import END_TOLERANCE_SECONDS
from packager.upload_source import SourceOptions, UploadSource, UploadSourceError
from packager.uploads import (
    PROBE_INFO_KEY,
    PROCESSING,
    UPLOAD_TASK,
    advance_upload,
    fail_upload,
)

log = logging.getLogger(__name__)

UPLOAD_RETRIES = 3
# Held while a job runs, renewed at every segment: far longer than one segment takes.
JOB_LOCK_SECONDS = 120


@dataclass(frozen=True, slots=True)
class _Job:
    upload_id: uuid.UUID
    session_id: uuid.UUID
    object_key: str
    size_bytes: int
    frame_rate: float | None
    declared_seconds: float | None


@celery_app.task(
    name=UPLOAD_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=UPLOAD_RETRIES,
)
def process_upload(self: Task, upload_id: str) -> str:
    """Package one upload's source rendition. Safe to run again (a redelivery after a lost
    worker, a retry after a storage fault): it starts the source over from scratch.

    A job longer than the broker's visibility timeout is delivered a second time while it
    still runs; the job lock turns that copy away (the running one keeps its message, so if
    its worker dies the broker delivers it again, and by then the lock has expired)."""
    settings = get_settings()
    store, redis = worker_services()
    lock = redis.lock(f"nebula:upload-job:{upload_id}", timeout=JOB_LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return "running elsewhere"
    try:
        return _run(self, settings, store, lock, uuid.UUID(upload_id))
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _run(
    self: Task, settings: Settings, store: ObjectStore, lock: Lock, upload_id: uuid.UUID
) -> str:
    job = _start(settings.database_url, upload_id)
    if job is None:
        return "gone"
    try:
        segments, seconds = _package(settings, store, job, keep_lock=lock.reacquire)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries < self.max_retries:
            delay = min(2**self.request.retries, MAX_RETRY_DELAY_SECONDS)
            raise self.retry(exc=exc, countdown=delay) from exc
        return _give_up(settings, store, job, f"storage or database unavailable: {exc}")
    except (UploadSourceError, av.FFmpegError) as exc:
        return _give_up(settings, store, job, f"the file cannot be processed: {exc}")
    if segments == 0:
        return _give_up(settings, store, job, "the file has no video frame to start a segment")
    if job.declared_seconds and seconds < job.declared_seconds - END_TOLERANCE_SECONDS:
        return _give_up(
            settings,
            store,
            job,
            f"the media stops at {seconds:.1f} s of the {job.declared_seconds:.1f} s the file "
            "declares: it is damaged",
        )
    store.delete(job.object_key)
    _, redis = worker_services()
    advance_upload(settings, redis, celery_app, job.session_id, source_segments=segments)
    return "packaged"


def _start(database_url: str, upload_id: uuid.UUID) -> _Job | None:
    """The upload still to process, its session's media rows cleared from any earlier run."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id)
        if upload is None or upload.status != PROCESSING or upload.session_id is None:
            return None
        # A run before this one died part-way: start over (the object keys are the same).
        db.execute(delete(Rendition).where(Rendition.session_id == upload.session_id))
        session = db.get(LiveSession, upload.session_id)
        probed = (session.media_info or {}).get(PROBE_INFO_KEY) or {}
        return _Job(
            upload.id,
            upload.session_id,
            upload.object_key,
            upload.size_bytes,
            (probed.get("video") or {}).get("frame_rate"),
            upload.duration_seconds,
        )


def _package(
    settings: Settings, store: ObjectStore, job: _Job, *, keep_lock: Callable[[], object]
) -> tuple[int, float]:
    """Demux (and encode what is not H.264/AAC) into the packager; store each segment.
    Returns how many segments, and how many seconds, the source rendition got."""
    _, redis = worker_services()
    writer = SourceWriter(
        settings,
        store,
        redis,
        celery_app,
        stream_id=None,
        session_id=job.session_id,
        timeline_start=0,
        transcode=True,
    )
    packager = LivePackager(settings.segment_seconds)
    options = SourceOptions(
        settings.segment_seconds,
        EncoderOptions(settings.transcode_preset, settings.transcode_threads),
    )
    # The SPS may not say the frame rate; the container did.
    metadata = {"framerate": job.frame_rate} if job.frame_rate else {}
    stored, seconds = 0, 0.0

    def store_segment(segment: PackagedSegment) -> None:
        nonlocal stored, seconds
        writer.write(segment, packager, metadata=metadata, bytes_ingested=job.size_bytes)
        stored, seconds = stored + 1, seconds + segment.duration
        keep_lock()
        advance_upload(settings, redis, celery_app, job.session_id)

    with store.open_reader(job.object_key) as file, av.open(file, mode="r") as container:
        source = UploadSource(container, options)
        log.info("upload %s: %s", job.upload_id, source.handling)
        for config in source.configs:
            packager.configure(config)  # before any unit: closes nothing
        for unit in source.access_units():
            for segment in packager.push(unit):
                store_segment(segment)
        for segment in packager.flush():
            store_segment(segment)
    return stored, seconds


def _give_up(settings: Settings, store: ObjectStore, job: _Job, reason: str) -> str:
    """Delete the original first, so whoever hears of the failure finds the end state."""
    try:
        store.delete(job.object_key)
    except Exception:  # noqa: BLE001 - the failure must be recorded; a leftover is harmless
        log.exception("original of upload %s not deleted", job.upload_id)
    _, redis = worker_services()
    fail_upload(settings, redis, celery_app, job.upload_id, reason)
    return "failed"
