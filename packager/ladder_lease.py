"""The worker's side of the ladder outbox: a task makes a segment's rungs only while it
holds the segment's lease, and renews the lease while it runs.

A live worker host that dies takes its tasks' messages with it until Redis's visibility
timeout (minutes) gives them back. The lease lapses within `ladder_lease_seconds` instead,
and the ladder sweep (`packager.ladder_outbox.send_due`) sends the work again, so another
worker redoes it within seconds. The lease also makes every copy of a task cheap: a copy
of work that runs elsewhere (a valid lease held by another task), or that is done (no job
row left), returns at once. A redelivery of the same message (same task id: a pool process
killed under its worker, a Celery retry) takes its lease back without waiting.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LadderJob
from core.settings import Settings

log = logging.getLogger(__name__)

# The lease is renewed this many times per lease period, so one slow renewal is not fatal.
RENEWALS_PER_LEASE = 3


def _job(session_id: uuid.UUID, sequence: int) -> ColumnElement[bool]:
    return (LadderJob.session_id == session_id) & (LadderJob.sequence == sequence)


def claim(
    database_url: str,
    session_id: uuid.UUID,
    sequence: int,
    task_id: str,
    worker: str,
    lease_seconds: float,
) -> bool:
    """Take the segment's lease: free, lapsed, or already this task's. False when the work
    is done (no job) or another task holds it."""
    with session_scope(database_url) as db:
        taken = db.execute(
            update(LadderJob)
            .where(
                _job(session_id, sequence),
                or_(
                    LadderJob.lease_until.is_(None),
                    LadderJob.lease_until < func.now(),
                    LadderJob.lease_task == task_id,
                ),
            )
            .values(
                lease_task=task_id,
                lease_worker=worker,
                lease_until=func.clock_timestamp() + timedelta(seconds=lease_seconds),
            )
            .returning(LadderJob.segment_id)
        ).first()
    return taken is not None


def renew(
    database_url: str, session_id: uuid.UUID, sequence: int, task_id: str, lease_seconds: float
) -> bool:
    """Extend this task's lease; False once it no longer holds it (done, or taken over)."""
    with session_scope(database_url) as db:
        renewed = db.execute(
            update(LadderJob)
            .where(_job(session_id, sequence), LadderJob.lease_task == task_id)
            .values(lease_until=func.clock_timestamp() + timedelta(seconds=lease_seconds))
            .returning(LadderJob.segment_id)
        ).first()
    return renewed is not None


def release(database_url: str, session_id: uuid.UUID, sequence: int, task_id: str) -> None:
    """Hand the lease back (the task failed before recording anything: a retry, or a later
    copy, takes it)."""
    with session_scope(database_url) as db:
        db.execute(
            update(LadderJob)
            .where(_job(session_id, sequence), LadderJob.lease_task == task_id)
            .values(lease_task=None, lease_worker=None, lease_until=None)
        )


def finish(db: Session, session_id: uuid.UUID, sequence: int) -> None:
    """In the transaction recording the segment's rungs, before them (the sweeps lock the job
    before the rung rows, so this order cannot deadlock with them): the work is over."""
    db.execute(delete(LadderJob).where(_job(session_id, sequence)))


@contextmanager
def hold(
    settings: Settings, session_id: uuid.UUID, sequence: int, task_id: str, worker: str
) -> Iterator[bool]:
    """The block runs with the segment's lease held and renewed (yields True), or the lease
    is not to be had (yields False: the work is done or runs elsewhere). A block that raises
    hands the lease back."""
    url, lease = settings.database_url, settings.ladder_lease_seconds
    if not claim(url, session_id, sequence, task_id, worker, lease):
        log.info("segment %s of session %s: done or running elsewhere", sequence, session_id)
        yield False
        return
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(lease / RENEWALS_PER_LEASE):
            try:
                if not renew(url, session_id, sequence, task_id, lease):
                    return
            except SQLAlchemyError as exc:
                log.warning("lease of segment %s not renewed: %s", sequence, exc)

    renewer = threading.Thread(target=keep_renewing, name=f"lease-{sequence}", daemon=True)
    renewer.start()
    completed = False
    try:
        yield True
        completed = True
    finally:
        stop.set()
        renewer.join()
        if not completed:
            try:
                release(url, session_id, sequence, task_id)
            except SQLAlchemyError as exc:  # it lapses by itself
                log.warning("lease of segment %s not handed back: %s", sequence, exc)
