"""Celery entry points. They glue storage, database and the pure packaging code together."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from celery import current_task

from core.db import session_scope
from core.delivery import INIT_TYPE, MEDIA_CACHE, SEGMENT_TYPE
from core.settings import get_settings
from core.storage import ObjectNotFoundError
from packager import ladder_lease, ladder_rows
from packager.celery_app import celery_app
from packager.enqueue import TRANSCODE_TASK
from packager.keys import segment_name
from packager.ladder_rows import RungOutcome, SourceSegment
from packager.mirror import publish_rungs
from packager.tasks.base import MediaTask, worker_services
from packager.transcoding.transcode import EncoderOptions, TranscodeError, transcode_segment

log = logging.getLogger(__name__)


@celery_app.task(base=MediaTask, name="nebula.ping")
def ping() -> dict[str, object]:
    """Answer who ran it: proves a worker consumes from the broker end to end."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}


class LadderTask(MediaTask):
    """Retried `NEBULA_TRANSCODE_RETRIES` times; then the rungs record the segment as
    failed (EXT-X-GAP) so their playlists move on."""

    @property
    def max_retries(self) -> int:
        return get_settings().transcode_retries

    def on_retries_exhausted(
        self, exc: Exception, session_id: str, sequence: int
    ) -> dict[str, Any]:
        log.error("segment %s of session %s given up: %s", sequence, session_id, exc)
        with session_scope(get_settings().database_url) as db:
            source = ladder_rows.load_source_segment(db, uuid.UUID(session_id), sequence)
        return _record(source, [RungOutcome(rung) for rung in source.rungs]) if source else {}


@celery_app.task(base=LadderTask, name=TRANSCODE_TASK)
def transcode_ladder_segment(session_id: str, sequence: int) -> dict[str, Any]:
    """Every rung of one source segment. Safe to run twice: same keys, upserted rows.

    Storage and database faults are retried (`LadderTask`); a source that does not decode
    is recorded as failed in every rung at once (EXT-X-GAP), so their playlists move on.
    """
    return _ladder_segment(uuid.UUID(session_id), sequence)


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
    except (ObjectNotFoundError, TranscodeError) as exc:
        log.warning("segment %s of session %s cannot be transcoded: %s", sequence, session_id, exc)
        return _record(source, [RungOutcome(rung) for rung in source.rungs])
    for output in outputs:
        if not source.init_written(output.rung):
            store.put_bytes(
                source.rung_key(output.rung, source.init_name),
                output.init.data,
                INIT_TYPE,
                cache_control=MEDIA_CACHE,
            )
        store.put_bytes(
            source.rung_key(output.rung, segment_name(sequence)),
            output.data,
            SEGMENT_TYPE,
            cache_control=MEDIA_CACHE,
        )
    return _record(source, [RungOutcome(o.rung, o.init.codecs, len(o.data)) for o in outputs])


def _record(source: SourceSegment, outcomes: list[RungOutcome]) -> dict[str, Any]:
    """Rows first (Postgres is the truth), then the playlist mirror and the events."""
    settings = get_settings()
    policy = ladder_rows.VariantPolicy.from_settings(settings)
    with session_scope(settings.database_url) as db:
        ladder_rows.plan_missing_rungs(db, source, policy)
        ladder_lease.finish(db, source.session_id, source.sequence)
        for outcome in outcomes:
            ladder_rows.record_rung_segment(db, source, outcome, policy)
    store, redis = worker_services()
    publish_rungs(settings, store, redis, celery_app, source, outcomes)
    return {o.rung.name: o.status for o in outcomes}
