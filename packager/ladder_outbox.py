"""Getting each closed source segment's ladder work to a worker, whatever the broker does.

A transactional outbox (`core.models.LadderJob`): the job row is written in the transaction
that records the source segment, then sent to Celery at once by the writer (`relay`) and
marked sent. `send_due`, run by every ingest's ladder sweep, sends again what is due:

- work never sent (the broker was down when the segment closed), once the writer has had
  one sweep interval to send it itself;
- work whose lease lapsed: the worker running it died (a killed host's task would otherwise
  come back only after Redis's visibility timeout);
- live work that no worker took within the rung deadline (the message was lost with a
  restarted broker, or sits behind a backlog: the copy is harmless, see below).

Sending twice is safe: a task runs only while it holds its segment's lease
(`packager.ladder_lease`), so a copy of work that is running or done elsewhere returns at
once. Each job is sent at most `ladder_max_sends` times; `packager.ladder_deadline` gives up
on one whose workers keep dying.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import Celery
from kombu.exceptions import KombuError
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LadderJob, LiveSession, Rendition, Segment
from core.settings import Settings
from packager.enqueue import LIVE_QUEUE, enqueue_ladder
from packager.ladder_rows import session_rungs

log = logging.getLogger(__name__)

# Faults of the broker connection: the job stays in the outbox for the sweep.
BROKER_ERRORS = (KombuError, OSError)
# Jobs one sweep takes at most; the next sweep continues.
SWEEP_BATCH = 200


def rung_deadline(settings: Settings) -> timedelta:
    """How long after its source segment a live rung segment may still be missing."""
    return timedelta(seconds=settings.rung_deadline_targets * settings.segment_seconds)


def add_job(db: Session, session_id: uuid.UUID, segment: Segment, queue: str) -> bool:
    """In the transaction recording the source segment (flushed, so it has its id): its
    ladder work, if its session's ladder gives the source any rungs. True when queued."""
    rendition = db.get(Rendition, segment.rendition_id)
    if not session_rungs(db.get(LiveSession, session_id), rendition):
        return False
    db.add(
        LadderJob(
            segment_id=segment.id,
            session_id=session_id,
            sequence=segment.sequence,
            queue=queue,
            sends=0,
        )
    )
    return True


def relay(
    celery: Celery, database_url: str, session_id: uuid.UUID, sequence: int, queue: str
) -> None:
    """Send a job just committed and mark it sent. A failure is only logged: the job is in
    the outbox, and the sweep sends it once the broker answers again."""
    try:
        enqueue_ladder(celery, session_id, sequence, queue)
    except BROKER_ERRORS as exc:
        log.warning(
            "ladder of segment %s of session %s not sent yet (%s); the sweep will",
            sequence,
            session_id,
            exc,
        )
        return
    try:
        with session_scope(database_url) as db:
            db.execute(
                update(LadderJob)
                .where(
                    LadderJob.session_id == session_id,
                    LadderJob.sequence == sequence,
                    LadderJob.sent_at.is_(None),
                )
                .values(sent_at=func.now(), sends=LadderJob.sends + 1)
            )
    except SQLAlchemyError as exc:
        # Sent but not marked: the sweep sends a copy, which finds the work taken.
        log.warning("ladder of segment %s not marked sent: %s", sequence, exc)


def send_due(settings: Settings, celery: Celery) -> int:
    """Send the jobs that are due (see the module docstring); returns how many went.

    The rows are locked while they are sent (SKIP LOCKED), so several ingests sweeping at
    once never send the same job twice. The first broker fault ends the sweep."""
    now = func.now()
    lapsed = LadderJob.lease_until < now
    never_sent = LadderJob.sent_at.is_(None) & (
        LadderJob.created_at < now - timedelta(seconds=settings.ladder_sweep_seconds)
    )
    live_not_taken = (
        (LadderJob.queue == LIVE_QUEUE)
        & LadderJob.lease_until.is_(None)
        & (LadderJob.sent_at < now - rung_deadline(settings))
    )
    sent = 0
    with session_scope(settings.database_url) as db:
        jobs = db.scalars(
            select(LadderJob)
            .where(
                (never_sent | lapsed | live_not_taken)
                & (LadderJob.sends < settings.ladder_max_sends)
            )
            .order_by(LadderJob.created_at)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            try:
                enqueue_ladder(celery, job.session_id, job.sequence, job.queue)
            except BROKER_ERRORS as exc:
                log.warning("ladder sweep: broker unavailable (%s); %d jobs wait", exc, len(jobs))
                break
            if job.lease_until is not None:
                log.warning(
                    "segment %s of session %s: the lease of %s lapsed; sent again",
                    job.sequence,
                    job.session_id,
                    job.lease_worker,
                )
            job.sent_at, job.sends = now, job.sends + 1
            job.lease_task = job.lease_worker = job.lease_until = None
            sent += 1
    return sent
