"""The upload job: the stored file becomes the source rendition of its session, segment by
segment; each segment queues the ladder task as a live segment does, so every worker shares
the rungs of a long file while the source is still being packaged.

An H.264/AAC file is remuxed here, start to end (that is quick). A file whose video must be
encoded is split instead: this job plans chunks of the timeline and queues one task per
chunk (`packager.tasks.upload_chunks`), so every worker shares the encode too.

The file is read from the bucket through ranged GETs (no local copy) and deleted once the
source rendition is complete, or the upload has failed: the segments are the media from
then on.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable

import av
from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from sqlalchemy import delete

from core.db import session_scope
from core.models import LiveSession, Rendition, Upload, UploadStatus
from core.settings import Settings, get_settings
from core.storage import ObjectStore
from media.hls.segment_packager import InitSegment, PackagedSegment, SegmentPackager
from media.mp4.fmp4 import init_segment
from media.types import CLOCK_HZ, AudioConfig, VideoConfig
from packager.celery_app import celery_app
from packager.enqueue import UPLOAD_TASK
from packager.tasks.base import worker_services
from packager.tasks.upload_chunks import (
    UploadJob,
    UploadTask,
    chunk_audio,
    chunk_audio_key,
    discard_upload_objects,
    encode_audio_units,
    enqueue_chunks,
    extent_refusal,
    give_up,
    pack_audio_unit,
    plan_chunks,
    read_audio_units,
    snap_audio,
)
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_probe import END_TOLERANCE_SECONDS, open_upload
from packager.transcoding.upload_source import SourceOptions, UploadSource, UploadSourceError
from packager.uploads import advance_upload, expect_chunks

log = logging.getLogger(__name__)

# Held while a job runs, renewed at every segment: far longer than one segment takes.
JOB_LOCK_SECONDS = 120
# How much past a held lock's expiry a delivery waits for it, and how early a release must
# come to count as the holder finishing rather than its lock running out.
LOCK_EXPIRY_MARGIN_SECONDS = 1.0


# Why an upload fails when its media is not what it should be.
NO_VIDEO = "the file has no video frame to start a segment"


@celery_app.task(base=UploadTask, name=UPLOAD_TASK, bind=True)
def process_upload(self: UploadTask, upload_id: str, chunk_seconds: float | None = None) -> str:
    """Package one upload's source rendition, or plan it in chunks of about `chunk_seconds`
    (`NEBULA_UPLOAD_CHUNK_SECONDS` unless given) when its video must be encoded. Safe to run
    again (a redelivery after a lost worker, a retry after a storage fault): it starts the
    source over from scratch.

    A job longer than the broker's visibility timeout is delivered a second time while it
    still runs; the job lock turns that copy away (the running one keeps its message, so if
    its worker dies the broker delivers it again). See `_take_job_lock` for the message of a
    job whose worker died, which finds the dead delivery's lock still held."""
    settings = get_settings()
    if chunk_seconds is None:
        chunk_seconds = settings.upload_chunk_seconds
    store, redis = worker_services()
    lock = redis.lock(f"nebula:upload-job:{upload_id}", timeout=JOB_LOCK_SECONDS)
    if not _take_job_lock(redis, lock):
        return "running elsewhere"  # not counted as a start: the copy does nothing
    try:
        if reason := self.delivered_too_often(settings, "the upload's job"):
            return give_up(settings, store, uuid.UUID(upload_id), reason)
        return _run(settings, store, lock, uuid.UUID(upload_id), chunk_seconds)
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _take_job_lock(redis: Redis, lock: Lock) -> bool:
    """Take the job's lock, or say that another delivery is running the job.

    A lock held belongs to a delivery still running (this message was sent again past the
    broker's visibility timeout), or to one whose pool process died: Celery requeues that
    message at once (reject_on_worker_lost), long before the dead holder's lock runs out.
    Turning it away would drop the job and leave the upload processing. So wait until the
    lock would run out: a dead holder's does; a live holder renews it first, or releases
    it early because the job is done."""
    if lock.acquire(blocking=False):
        return True
    ttl = redis.pttl(lock.name) / 1000  # negative: gone already, or held without expiry
    runs_out = time.monotonic() + ttl
    if not lock.acquire(blocking=True, blocking_timeout=max(ttl, 0) + LOCK_EXPIRY_MARGIN_SECONDS):
        return False
    if time.monotonic() < runs_out - LOCK_EXPIRY_MARGIN_SECONDS:
        lock.release()  # released before it could run out: the job finished
        return False
    return True


def _run(
    settings: Settings,
    store: ObjectStore,
    lock: Lock,
    upload_id: uuid.UUID,
    chunk_seconds: float,
) -> str:
    job = _start(settings.database_url, upload_id)
    if job is None:
        # Ready or failed already (a redelivery after the last step): what is left of the
        # upload's objects is of no use.
        discard_upload_objects(store, upload_id)
        return "gone"
    options = SourceOptions(
        settings.segment_seconds,
        EncoderOptions(settings.transcode_preset, settings.transcode_threads),
    )
    try:
        with store.open_reader(job.object_key) as file, open_upload(file) as container:
            source = UploadSource(container, options)
            log.info("upload %s: %s", job.upload_id, source.handling)
            if source.video_encoded:
                return _split(settings, store, job, source, chunk_seconds, lock.reacquire)
            segments, seconds = _remux(settings, store, job, source, lock.reacquire)
    except (ValueError, av.FFmpegError) as exc:  # the media's fault: decoder, packager, muxer
        return give_up(settings, store, job.upload_id, f"the file cannot be processed: {exc}")
    if segments == 0:
        return give_up(settings, store, job.upload_id, NO_VIDEO)
    if reason := _shortfall(job, seconds):
        return give_up(settings, store, job.upload_id, reason)
    _, redis = worker_services()
    # The state first: a worker lost before the delete leaves a file the next delivery
    # finds (and deletes, or packages again), never a source whose file is gone.
    advance_upload(settings, redis, celery_app, job.session_id, source_segments=segments)
    store.delete(job.object_key)
    return "packaged"


def _start(database_url: str, upload_id: uuid.UUID) -> UploadJob | None:
    """The upload still to process, its session's media rows cleared from any earlier run."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id)
        if upload is None or upload.status != UploadStatus.PROCESSING or upload.session_id is None:
            return None
        # A run before this one died part-way: start over (the object keys are the same).
        db.execute(delete(Rendition).where(Rendition.session_id == upload.session_id))
        upload.source_segments = upload.chunk_count = upload.chunks = None
        return UploadJob.from_rows(upload, db.get(LiveSession, upload.session_id))


def _shortfall(job: UploadJob, seconds: float) -> str | None:
    """Why media that stops well before the duration the file declares is refused."""
    if job.declared_seconds and seconds < job.declared_seconds - END_TOLERANCE_SECONDS:
        return (
            f"the media stops at {seconds:.1f} s of the {job.declared_seconds:.1f} s the file "
            "declares: it is damaged"
        )
    return None


def _remux(
    settings: Settings,
    store: ObjectStore,
    job: UploadJob,
    source: UploadSource,
    keep_lock: Callable[[], object],
) -> tuple[int, float]:
    """Demux (and encode the audio if it is not AAC) into the packager; store each segment.
    Returns how many segments, and how many seconds, the source rendition got."""
    _, redis = worker_services()
    writer = job.source_writer(settings, store)
    packager = SegmentPackager(settings.segment_seconds)
    stored, seconds = 0, 0.0

    def store_segment(segment: PackagedSegment) -> None:
        nonlocal stored, seconds
        if reason := extent_refusal(
            seconds + segment.duration, job.declared_seconds, settings.upload_max_seconds
        ):
            raise UploadSourceError(reason)
        writer.write(segment, packager, metadata=job.metadata, bytes_ingested=job.size_bytes)
        stored, seconds = stored + 1, seconds + segment.duration
        keep_lock()
        advance_upload(settings, redis, celery_app, job.session_id)

    for config in source.configs:
        packager.configure(config)  # before any unit: closes nothing
    for unit in source.access_units():
        for segment in packager.push(unit):
            store_segment(segment)
    for segment in packager.flush():
        store_segment(segment)
    return stored, seconds


def _split(
    settings: Settings,
    store: ObjectStore,
    job: UploadJob,
    source: UploadSource,
    chunk_seconds: float,
    keep_lock: Callable[[], object],
) -> str:
    """Plan the chunks, store their audio, make the source rendition's row (so the chunks do
    not race to create it), and queue them.

    The scan writes the audio to a spool file as it reads it (the chunks are known only
    once the whole video's extent is), and the chunks' audio objects are cut from that
    file in one pass: a long file's audio is never all in memory."""
    with tempfile.TemporaryFile(prefix="nebula-upload-audio-") as spool:
        scan = source.scan(lambda unit: spool.write(pack_audio_unit(unit)), keep_lock)
        if scan.video_start is None or scan.video_end is None:
            return give_up(settings, store, job.upload_id, NO_VIDEO)
        last_frame = 1 / job.frame_rate if job.frame_rate else 0.0
        seconds = (scan.video_end - scan.video_start) / CLOCK_HZ + last_frame
        reason = _shortfall(job, seconds) or extent_refusal(
            seconds, job.declared_seconds, settings.upload_max_seconds
        )
        if reason:
            return give_up(settings, store, job.upload_id, reason)
        plan = plan_chunks(
            scan.video_start, scan.video_end, settings.segment_seconds, chunk_seconds
        )
        audio = next((c for c in source.configs if isinstance(c, AudioConfig)), None)
        if audio is not None:
            spool.seek(0)
            units = snap_audio(read_audio_units(spool), audio.sample_rate, audio.frame_samples)
            for index, part in chunk_audio(units, plan):
                store.put_bytes(
                    chunk_audio_key(job.upload_id, index),
                    encode_audio_units(part),
                    "application/octet-stream",
                )
    video = next(c for c in source.configs if isinstance(c, VideoConfig))
    init = InitSegment(0, init_segment(video, audio), video, audio)
    job.source_writer(settings, store).ensure_rendition(init, job.metadata)
    expect_chunks(settings.database_url, job.upload_id, plan.count)
    enqueue_chunks(job.upload_id, plan)
    return f"split into {plan.count} chunks"
