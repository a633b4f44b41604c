"""Upload state in PostgreSQL: progress as work lands, and the one switch to `ready` or `failed`.

Work is counted in media seconds: the source rendition once, each rung once more, so
progress = seconds packaged or transcoded / (duration x (1 + rungs)). The upload job (or its
chunk tasks) and every ladder task call `advance_upload` after committing their rows; it runs
under the upload row's lock, so concurrent workers serialise there: progress only grows, its
events go out in order, and exactly one caller sees the last rung land and marks the upload
ready. A source made in chunks is complete once every chunk has reported (`record_chunk`,
under the same lock): its segment count is then the sum of theirs.
A rung segment that could not be made counts as done, as in a live session: its rows say
failed and the rung's playlist shows an EXT-X-GAP there.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.events import ProgressEvent, UploadStatusEvent, encode_event, publish_event
from core.models import LiveSession, Rendition, Segment, SessionStatus, Upload, UploadStatus
from core.settings import Settings
from core.webhooks import WebhookEvent, enqueue_webhook
from media.ladder import SOURCE
from packager import catalog
from packager.keys import recording_path
from packager.ladder_rows import session_rungs

log = logging.getLogger(__name__)

# Where the session's media_info keeps what the API's probe read from the file.
PROBE_INFO_KEY = "upload"
# Until the last rendition is complete, progress stops short of 1: 1 means ready.
PROGRESS_BEFORE_READY = 0.99


def upload_prefix(upload_id: uuid.UUID | str) -> str:
    """Everything kept while an upload is processed: the file, the shared audio of its chunks."""
    return f"uploads/{upload_id}/"


def upload_object_key(upload_id: uuid.UUID | str) -> str:
    """Where the file as received is kept while it is processed."""
    return f"{upload_prefix(upload_id)}original"


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """One chunk of a transcoded upload's source, packaged: by which worker, into how many
    segments."""

    index: int
    segments: int
    worker: str


def expect_chunks(database_url: str, upload_id: uuid.UUID, count: int) -> None:
    """The planner queues `count` chunks; the source is complete when all have reported."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id, with_for_update=True)
        upload.chunk_count, upload.chunks = count, {}


def record_chunk(database_url: str, upload_id: uuid.UUID, report: ChunkReport) -> bool:
    """Note a packaged chunk (again, for a redelivered one: same entry). True when this call
    completed the set: the source rendition then has `source_segments`, and the caller
    reports it with `advance_upload` like any other work."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id, with_for_update=True)
        if upload is None or upload.status != UploadStatus.PROCESSING or upload.chunk_count is None:
            return False
        done = dict(upload.chunks or {})
        complete_before = len(done) == upload.chunk_count
        done[str(report.index)] = {"segments": report.segments, "worker": report.worker}
        upload.chunks = done  # a new dict: the JSON column sees the change
        if len(done) < upload.chunk_count:
            return False
        upload.source_segments = sum(chunk["segments"] for chunk in done.values())
        return not complete_before


def chunk_done(database_url: str, upload_id: uuid.UUID, index: int) -> bool | None:
    """Whether that chunk is packaged already; None when the upload is no longer processing."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id)
        if upload is None or upload.status != UploadStatus.PROCESSING:
            return None
        return str(index) in (upload.chunks or {})


def playback_url(settings: Settings, upload: Upload) -> str | None:
    if upload.session_id is None:
        return None
    return f"{settings.public_http_url}{recording_path(upload.session_id)}"


def status_event(upload: Upload, settings: Settings) -> UploadStatusEvent:
    """The `status` event, which is also the websocket's first message."""
    return UploadStatusEvent(
        upload.id,
        UploadStatus(upload.status),
        upload.progress,
        upload.error,
        upload.session_id,
        playback_url(settings, upload),
    )


def upload_status_message(
    database_url: str, settings: Settings, upload_id: uuid.UUID
) -> str | None:
    """The websocket's first message; None for an unknown upload."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id)
        if upload is None:
            return None
        return encode_event(status_event(upload, settings))


@dataclass(frozen=True, slots=True)
class _Work:
    done_seconds: float
    total_seconds: float
    complete: bool


def _work(db: Session, upload: Upload, session: LiveSession) -> _Work:
    """What is done and what remains; complete once every rendition has every segment."""
    source = catalog.find_rendition(db, session.id, SOURCE)
    if source is None:
        return _Work(0.0, 0.0, False)
    rungs = [rung.name for rung in session_rungs(session, source)]
    rows = db.execute(
        select(Rendition.name, func.count(Segment.id), func.coalesce(func.sum(Segment.duration), 0))
        .outerjoin(Segment, Segment.rendition_id == Rendition.id)
        .where(Rendition.session_id == session.id)
        .group_by(Rendition.name)
    ).all()
    counts = {name: count for name, count, _ in rows}
    seconds = {name: float(total) for name, _, total in rows}
    packaged = upload.source_segments
    media_seconds = seconds[SOURCE] if packaged is not None else upload.duration_seconds or 0.0
    complete = packaged is not None and all(
        counts.get(name, 0) == packaged for name in [SOURCE, *rungs]
    )
    return _Work(sum(seconds.values()), media_seconds * (1 + len(rungs)), complete)


def advance_upload(
    settings: Settings,
    redis: Redis,
    celery: Celery,
    session_id: uuid.UUID,
    *,
    source_segments: int | None = None,
) -> None:
    """Call after committing work for an upload's session (the job passes `source_segments`
    once the whole source is packaged). Moves progress on; marks the upload ready, and its
    session ended (VOD playlists with ENDLIST), when the last rendition is complete."""
    with session_scope(settings.database_url) as db:
        upload = db.scalars(
            select(Upload).where(Upload.session_id == session_id).with_for_update()
        ).first()
        if upload is None or upload.status != UploadStatus.PROCESSING:
            return
        session = db.get(LiveSession, session_id)
        if source_segments is not None:
            upload.source_segments = source_segments
        work = _work(db, upload, session)
        if not work.complete:
            # No duration declared: nothing to measure against until the source is packaged.
            progress = (
                min(PROGRESS_BEFORE_READY, work.done_seconds / work.total_seconds)
                if work.total_seconds
                else 0.0
            )
            if progress > upload.progress:
                upload.progress = progress
                # Still under the row lock: the next caller's event cannot overtake this one.
                publish_event(redis, ProgressEvent(upload.id, progress))
            return
        now = datetime.now(UTC)
        upload.status, upload.progress, upload.finished_at = UploadStatus.READY, 1.0, now
        session.status, session.ended_at = SessionStatus.ENDED, now
        db.flush()
        event = status_event(upload, settings)
        webhook = _webhook_data(upload, event)
    log.info("upload %s ready", webhook["upload_id"])
    _announce(settings, redis, celery, WebhookEvent.UPLOAD_READY, webhook, event)


def fail_upload(
    settings: Settings, redis: Redis, celery: Celery, upload_id: uuid.UUID, reason: str
) -> None:
    """The upload cannot be processed: `failed` with the reason, its session too. What was
    made so far stays (the session's rows and objects) until the retention sweep."""
    with session_scope(settings.database_url) as db:
        upload = db.get(Upload, upload_id, with_for_update=True)
        if upload is None or upload.status != UploadStatus.PROCESSING:
            return
        now = datetime.now(UTC)
        upload.status, upload.error, upload.finished_at = UploadStatus.FAILED, reason, now
        session = db.get(LiveSession, upload.session_id) if upload.session_id else None
        if session is not None:
            session.status, session.ended_at, session.error = SessionStatus.FAILED, now, reason
        db.flush()
        event = status_event(upload, settings)
        webhook = _webhook_data(upload, event)
    log.warning("upload %s failed: %s", upload_id, reason)
    _announce(settings, redis, celery, WebhookEvent.UPLOAD_FAILED, webhook, event)


def _webhook_data(upload: Upload, event: UploadStatusEvent) -> dict[str, Any]:
    return {"upload_id": str(upload.id), "name": upload.name, **event.state()}


def _announce(
    settings: Settings,
    redis: Redis,
    celery: Celery,
    event: WebhookEvent,
    webhook: dict[str, Any],
    status: UploadStatusEvent,
) -> None:
    """After the commit, so whoever hears it and asks the API sees the same state."""
    publish_event(redis, status)
    enqueue_webhook(celery, settings, event, webhook)
