"""Background duties that are not media: webhook delivery, the recording retention sweep and
the sweep that fails uploads whose job was lost."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import httpx
from sqlalchemy import delete, select

from core.db import session_scope
from core.models import LiveSession, SessionStatus, Upload, UploadStatus
from core.settings import Settings, get_settings
from core.storage import ObjectStore
from core.webhooks import DELIVER_TASK, post_webhook
from packager.celery_app import celery_app
from packager.keys import media_key
from packager.tasks.base import MediaTask
from packager.tasks.upload_chunks import give_up

log = logging.getLogger(__name__)

EXPIRE_TASK = "nebula.expire_recordings"
STUCK_UPLOADS_TASK = "nebula.fail_stuck_uploads"
# Each sweep deletes at most this many sessions, so one run stays short; the next continues.
EXPIRE_BATCH = 200


class WebhookRejectedError(Exception):
    """The receiver answered with a status other than 2xx."""


class WebhookDelivery(MediaTask):
    """A receiver that is down or refusing is tried again, with waits up to ten minutes
    apart, until `NEBULA_WEBHOOK_MAX_ATTEMPTS` deliveries have failed."""

    autoretry_for = (httpx.HTTPError, WebhookRejectedError)
    retry_backoff_max = 600

    @property
    def max_retries(self) -> int:
        return get_settings().webhook_max_attempts - 1

    def on_retries_exhausted(self, exc: Exception, *args: Any, **kwargs: Any) -> NoReturn:
        log.error("webhook given up after %d attempts: %s", self.request.retries + 1, exc)
        raise exc


@celery_app.task(base=WebhookDelivery, name=DELIVER_TASK)
def deliver_webhook(body: str) -> int:
    """POST one event; retried with exponential backoff (1 s, 2 s, 4 s ..., jittered) until
    it lands."""
    settings = get_settings()
    if not settings.webhook_url:
        return 0
    status = post_webhook(settings.webhook_url, settings.webhook_secret, body)
    if not 200 <= status < 300:
        raise WebhookRejectedError(f"{settings.webhook_url} answered {status}")
    return status


def expire_recordings(database_url: str, store: ObjectStore, older_than: timedelta) -> int:
    """Delete sessions that ended before `now - older_than`: objects first, then rows.

    Objects first, so a failure leaves rows pointing at nothing rather than orphaned objects
    nobody can find; the next sweep finishes the job. Returns how many sessions went."""
    cutoff = datetime.now(UTC) - older_than
    with session_scope(database_url) as db:
        expired = db.scalars(
            select(LiveSession)
            .where(LiveSession.status != SessionStatus.LIVE, LiveSession.ended_at < cutoff)
            .order_by(LiveSession.ended_at)
            .limit(EXPIRE_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        # An uploaded file's recording is all its upload made (before the sessions go: their
        # deletion would set the uploads' session_id to null).
        db.execute(delete(Upload).where(Upload.session_id.in_([s.id for s in expired])))
        for session in expired:
            for rendition in session.renditions:
                store.delete_prefix(media_key(session.stream_id, rendition.name, session.id, ""))
            db.delete(session)
    if expired:
        log.info("retention: deleted %d sessions ended before %s", len(expired), cutoff)
    return len(expired)


@celery_app.task(base=MediaTask, name=EXPIRE_TASK)
def expire_recordings_task() -> int:
    """Beat entry point: a no-op unless NEBULA_RECORDING_RETENTION is set."""
    settings = get_settings()
    retention = settings.recording_retention_delta
    if retention is None:
        return 0
    return expire_recordings(settings.database_url, ObjectStore.from_settings(settings), retention)


def fail_stuck_uploads(settings: Settings, store: ObjectStore, older_than: timedelta) -> int:
    """Fail the uploads still processing that were accepted before `now - older_than`: their
    job was lost (a message dropped, every delivery turned away), so nothing else would
    ever end them. Each gets the failure webhook, and its original is deleted. Returns how
    many uploads it failed."""
    cutoff = datetime.now(UTC) - older_than
    with session_scope(settings.database_url) as db:
        stuck = db.scalars(
            select(Upload.id)
            .where(Upload.status == UploadStatus.PROCESSING, Upload.created_at < cutoff)
            .order_by(Upload.created_at)
            .limit(EXPIRE_BATCH)
        ).all()
    reason = (
        f"still processing {older_than.total_seconds():.0f} s after it was accepted "
        "(NEBULA_UPLOAD_STUCK_SECONDS): its job was lost"
    )
    for upload_id in stuck:
        give_up(settings, store, upload_id, reason)
    if stuck:
        log.warning("failed %d uploads stuck in processing since before %s", len(stuck), cutoff)
    return len(stuck)


@celery_app.task(base=MediaTask, name=STUCK_UPLOADS_TASK)
def fail_stuck_uploads_task() -> int:
    """Beat entry point."""
    settings = get_settings()
    return fail_stuck_uploads(
        settings,
        ObjectStore.from_settings(settings),
        timedelta(seconds=settings.upload_stuck_seconds),
    )
