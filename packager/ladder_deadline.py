"""The ladder sweep: no rung waits for a segment that is late or lost.

A rung playlist lists its segments up to the first one missing (`packager.catalog`), so one
segment that never comes would freeze the rung. Once a live job is `rung_deadline` old, the
sweep writes its missing rung segments as failed rows marked `missed_deadline`: playlists
list them as EXT-X-GAP and the rung moves on. The job stays in the outbox: the work still
runs (or is sent again), and a late result replaces the failed row, so the recording plays
it; the live playlists keep the GAP they may already have served (`packager.catalog`).

A job whose lease lapses after its last send (`ladder_max_sends`: its workers keep dying on
it) is given up: its rungs are recorded as failed, as for a segment that does not decode,
and the job leaves the outbox, so the session's playlists can end. A job that was only
never taken (it waits behind a backlog) is not: its task still comes.

Every ingest runs `sweep` every `ladder_sweep_seconds`, with no need for the broker: gaps
are written while Redis is down too. Rows are taken with SKIP LOCKED and each step is
recorded on them, so any number of sweepers share the work without doing it twice.
"""

from __future__ import annotations

import logging

from celery import Celery
from redis import Redis, RedisError
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LadderJob
from core.settings import Settings
from core.storage import ObjectStore, StorageError
from packager.enqueue import LIVE_QUEUE
from packager.ladder_outbox import BROKER_ERRORS, SWEEP_BATCH, rung_deadline, send_due
from packager.ladder_rows import (
    RungOutcome,
    SourceSegment,
    VariantPolicy,
    load_source_segment,
    record_rung_segment,
)
from packager.mirror import publish_rungs

log = logging.getLogger(__name__)


def list_overdue_as_gaps(settings: Settings) -> list[SourceSegment]:
    """Failed rows, marked `missed_deadline`, for the missing rung segments of every live job
    past its deadline; returns the source segments that got them."""
    gapped: list[SourceSegment] = []
    with session_scope(settings.database_url) as db:
        for job in _locked(
            db,
            (LadderJob.queue == LIVE_QUEUE)
            & LadderJob.gapped_at.is_(None)
            & (LadderJob.created_at < func.now() - rung_deadline(settings)),
        ):
            job.gapped_at = func.now()
            if source := _record_failed(
                db, job, VariantPolicy.from_settings(settings), missed_deadline=True
            ):
                gapped.append(source)
    if gapped:
        log.warning("ladder: %d segments past their deadline listed as gaps", len(gapped))
    return gapped


def give_up_abandoned(settings: Settings) -> list[SourceSegment]:
    """Jobs out of sends whose last worker died: their rungs are recorded as failed and the
    jobs leave the outbox. Returns their source segments."""
    abandoned: list[SourceSegment] = []
    with session_scope(settings.database_url) as db:
        for job in _locked(
            db,
            (LadderJob.sends >= settings.ladder_max_sends) & (LadderJob.lease_until < func.now()),
        ):
            log.error(
                "segment %s of session %s: %d workers died on it; its rungs are given up",
                job.sequence,
                job.session_id,
                job.sends,
            )
            if source := _record_failed(
                db, job, VariantPolicy.from_settings(settings), missed_deadline=False
            ):
                abandoned.append(source)
            db.delete(job)
    return abandoned


def sweep(settings: Settings, store: ObjectStore, redis: Redis, celery: Celery) -> None:
    """One round: gaps and give-ups first (the database alone), then the sends."""
    for source in list_overdue_as_gaps(settings) + give_up_abandoned(settings):
        try:
            publish_rungs(
                settings, store, redis, celery, source, [RungOutcome(r) for r in source.rungs]
            )
        except (RedisError, StorageError, *BROKER_ERRORS) as exc:  # the rows are the truth
            log.warning("ladder sweep: segment %s not announced: %s", source.sequence, exc)
    send_due(settings, celery)


def _locked(db: Session, due: ColumnElement[bool]) -> list[LadderJob]:
    return list(
        db.scalars(
            select(LadderJob)
            .where(due)
            .order_by(LadderJob.created_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )


def _record_failed(
    db: Session, job: LadderJob, policy: VariantPolicy, *, missed_deadline: bool
) -> SourceSegment | None:
    source = load_source_segment(db, job.session_id, job.sequence)
    if source is None:
        return None
    for rung in source.rungs:
        record_rung_segment(db, source, RungOutcome(rung), policy, missed_deadline=missed_deadline)
    return source
