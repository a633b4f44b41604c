"""Celery entry points. They glue storage, database and the pure packaging code together."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from functools import cache
from typing import Any

from celery import Task, current_task
from redis import Redis, RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from core.db import session_scope
from core.settings import get_settings
from core.storage import ObjectStore, StorageError
from packager import ladder_lease, ladder_rows
from packager.celery_app import celery_app
from packager.enqueue import TRANSCODE_TASK
from packager.keys import segment_name
from packager.ladder_rows import RungOutcome, SourceSegment
from packager.mirror import publish_rungs
from packager.transcoding.transcode import EncoderOptions, TranscodeError, transcode_segment

log = logging.getLogger(__name__)

# Faults of the services around us: worth retrying, unlike a segment that does not decode.
TRANSIENT_ERRORS = (StorageError, OperationalError, InterfaceError, RedisError)
MAX_RETRY_DELAY_SECONDS = 30


@celery_app.task(name="nebula.ping")
def ping() -> dict[str, object]:
    """Answer who ran it: proves a worker consumes from the broker end to end."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}


def retry_with_backoff(task: Task, exc: Exception) -> None:
    """Retry the task with exponential backoff while it has retries left (raises Celery's
    Retry); returns once they are spent, for the caller to give up its way."""
    if task.request.retries < task.max_retries:
        delay = min(2**task.request.retries, MAX_RETRY_DELAY_SECONDS)
        raise task.retry(exc=exc, countdown=delay) from exc


@cache
def worker_services() -> tuple[ObjectStore, Redis]:
    settings = get_settings()
    return ObjectStore.from_settings(settings), Redis.from_url(settings.redis_url)


@celery_app.task(
    name=TRANSCODE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=get_settings().transcode_retries,
)
def transcode_ladder_segment(self: Task, session_id: str, sequence: int) -> dict[str, Any]:
    """Every rung of one source segment. Safe to run twice: same keys, upserted rows.

    Storage and database faults are retried with exponential backoff; once retries run out,
    or at once for a source that does not decode, the rungs record the segment as failed
    (EXT-X-GAP) so their playlists move on.
    """
    try:
        return _ladder_segment(uuid.UUID(session_id), sequence)
    except TRANSIENT_ERRORS as exc:
        retry_with_backoff(self, exc)
        log.error("segment %s of session %s given up: %s", sequence, session_id, exc)
        with session_scope(get_settings().database_url) as db:
            source = ladder_rows.load_source_segment(db, uuid.UUID(session_id), sequence)
        return _record(source, [RungOutcome(rung) for rung in source.rungs]) if source else {}


def _ladder_segment(session_id: uuid.UUID, sequence: int) -> dict[str, Any]:
    """The rungs, made by the task holding the segment's lease; a copy of work that is done,
    or running elsewhere, returns at once (packager/ladder_lease.py)."""
    request = current_task.request
    with ladder_lease.hold(
        get_settings(), session_id, sequence, request.id, request.hostname
    ) as held:
        return _make_rungs(session_id, sequence) if held else {}


def _make_rungs(session_id: uuid.UUID, sequence: int) -> dict[str, Any]:
    settings = get_settings()
    with session_scope(settings.database_url) as db:
        source = ladder_rows.load_source_segment(db, session_id, sequence)
    if source is None or not source.rungs:
        return {}
    store, _ = worker_services()
    try:
        outputs = transcode_segment(
            store.get_bytes(source.init_key),
            store.get_bytes(source.object_key),
            source.rungs,
            sequence=sequence,
            init_index=source.init_index,
            options=EncoderOptions(settings.transcode_preset, settings.transcode_threads),
        )
    except (KeyError, TranscodeError) as exc:
        log.warning("segment %s of session %s cannot be transcoded: %s", sequence, session_id, exc)
        return _record(source, [RungOutcome(rung) for rung in source.rungs])
    for output in outputs:
        store.put_bytes(
            source.rung_key(output.rung, source.init_name), output.init.data, "video/mp4"
        )
        store.put_bytes(
            source.rung_key(output.rung, segment_name(sequence)),
            output.data,
            "video/iso.segment",
        )
    return _record(source, [RungOutcome(o.rung, o.init.codecs, len(o.data)) for o in outputs])


def _record(source: SourceSegment, outcomes: list[RungOutcome]) -> dict[str, Any]:
    """Rows first (Postgres is the truth), then the playlist mirror and the events."""
    settings = get_settings()
    with session_scope(settings.database_url) as db:
        ladder_lease.finish(db, source.session_id, source.sequence)
        for outcome in outcomes:
            ladder_rows.record_rung_segment(db, source, outcome)
    store, redis = worker_services()
    publish_rungs(settings, store, redis, celery_app, source, outcomes)
    return {o.rung.name: o.status for o in outcomes}
