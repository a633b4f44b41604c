"""The publish lifecycle shared by every ingest protocol: authorise, package, end.

It also owns this process's periodic work: heartbeats for the sessions it holds, ending
sessions whose publisher did not come back within the grace window (held by any process),
advancing the playlists of streams nobody feeds (`ingest.outages`), and the ladder sweep
(`packager.ladder_deadline`): the process that makes live segments is the one that sees
their rungs never wait on a lost task, and it needs no broker for that.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from core.events import StatusEvent, publish_event
from core.models import StreamStatus
from core.retry import TRANSIENT_ERRORS
from core.settings import Settings
from core.storage import ObjectStore
from core.webhooks import WebhookEvent, enqueue_webhook
from ingest import outages, sessions, spool_replay
from ingest.holder import this_process
from ingest.publication import Publication, ResumePoint, resume_after
from ingest.sink import SegmentSink
from ingest.spool import Leftover, Spool, SpoolFullError
from ingest.spool_replay import Adoption
from ingest.spool_slot import claim_slot
from packager import ladder_deadline
from packager.celery_app import make_celery
from packager.keys import recording_path
from packager.mirror import write_playlists

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0


def _best_effort(what: str, call: Callable[..., object], *args: object, **kwargs: object) -> None:
    try:
        call(*args, **kwargs)
    except Exception:
        log.warning("could not send %s; going on", what, exc_info=True)


@dataclass
class _Tail:
    """The last of a session's sinks on this process: a publisher resuming the session
    here is stored after it and continues after its `point`."""

    sink: asyncio.Task[None]
    point: Callable[[], ResumePoint]
    held: bool  # this process holds the session: it heartbeats it
    # Its publisher is gone (not by an explicit end) while its segments are stored: a
    # reconnect resumes it at once.
    resumable: bool = False


class Publisher:
    def __init__(self, settings: Settings, store: ObjectStore, redis: Redis) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.active: dict[uuid.UUID, Publication] = {}  # by session: its live connection's
        self.celery = make_celery(settings.redis_url)
        # Its own slot of the data dir's spool: what a dead process left there is replayed.
        self.spool = Spool(claim_slot(settings.data_dir / "spool").path, settings.spool_max_bytes)
        self.name = f"{socket.gethostname()}:{os.getpid()}"  # this ingest, in reports
        self.holder = this_process()  # and on the sessions it holds
        self._tails: dict[uuid.UUID, _Tail] = {}
        # Publishes taken, replays adopting and sessions let go decide one at a time, so a
        # session is never let go while a publish resumes it.
        self._handover = asyncio.Lock()

    @property
    def held(self) -> list[uuid.UUID]:
        """The sessions this process heartbeats: live here, or still being stored."""
        return list({*self.active, *(s for s, tail in self._tails.items() if tail.held)})

    async def begin(self, stream_key: str, protocol: str) -> tuple[Publication | None, str]:
        try:
            self.spool.check_room()
            async with self._handover:
                publication = await self._open(stream_key, protocol)
        except (sessions.PublishRefusedError, SpoolFullError) as refused:
            return None, str(refused)
        grant = publication.grant
        await asyncio.to_thread(self._announce_live, grant)
        log.info(
            "stream %s live (%s session %s)",
            grant.stream_id,
            "resumed" if grant.resumed else "new",
            grant.session_id,
        )
        return publication, ""

    async def _open(self, stream_key: str, protocol: str) -> Publication:
        resumable = [session for session, tail in self._tails.items() if tail.resumable]
        grant = await asyncio.to_thread(
            sessions.open_publish,
            self.settings.database_url,
            stream_key,
            protocol,
            self.settings.reconnect_grace_seconds,
            hold_seconds=self.settings.presentation_hold_seconds,
            holder=self.holder,
            resumable_here=resumable,
        )
        before = self._tails.get(grant.session_id) if grant.resumed else None
        if before is not None:
            grant = resume_after(grant, before.point())
        publication = Publication(
            grant,
            self.settings,
            self.store,
            self.redis,
            self.celery,
            self.spool,
            after=before.sink if before else None,
        )
        self.active[grant.session_id] = publication
        self._tails[grant.session_id] = _Tail(
            publication.sink.task, publication.resume_point, held=True
        )
        return publication

    async def end(self, publication: Publication, *, explicit: bool) -> None:
        """Store what is left, then end the session (explicit) or open the grace window.
        A dropped publisher may resume the session here at once meanwhile: the session is
        then its new connection's to close."""
        session_id, sink = publication.grant.session_id, publication.sink.task
        publication.close()
        del self.active[session_id]
        self._tails[session_id].resumable = not explicit
        try:
            await publication.finish()
        except BaseException:  # stop holding it: once its heartbeat is stale, sweeps take over
            if self._tails.get(session_id) and self._tails[session_id].sink is sink:
                del self._tails[session_id]
            raise
        await self._let_go(session_id, sink, explicit=explicit)

    async def _let_go(
        self, session_id: uuid.UUID, sink: asyncio.Task[None], *, explicit: bool
    ) -> None:
        """`sink` stored everything: unless a later one of the session took over, end the
        session (explicit) or open its grace window, and stop holding it."""
        async with self._handover:
            tail = self._tails.get(session_id)
            if tail is None or tail.sink is not sink:
                return
            try:
                ended = await asyncio.to_thread(
                    sessions.close_publish,
                    self.settings.database_url,
                    session_id,
                    explicit=explicit,
                )
            finally:
                del self._tails[session_id]
                self.spool.release(session_id)
        if ended:
            await asyncio.to_thread(self._announce_end, ended)

    def start_replays(self) -> None:
        """Store what a process that stopped left in the spool, in the background, one
        replay per session (`ingest.spool_replay`)."""
        for session_id, leftovers in self.spool.leftovers.items():
            task = asyncio.create_task(
                self._replay(session_id, leftovers), name=f"replay-{session_id}"
            )
            self._tails[session_id] = _Tail(
                task, functools.partial(spool_replay.leftovers_end, leftovers), held=False
            )
        self.spool.leftovers = {}

    async def _replay(self, session_id: uuid.UUID, leftovers: list[Leftover]) -> None:
        tail = self._tails[session_id]
        outcome = await self._adopt(session_id, tail)
        if outcome is not Adoption.ADOPTED:
            self.spool.set_aside(
                [left.entry for left in leftovers], spool_replay.unplaced_reason(leftovers, outcome)
            )
            if self._tails.get(session_id) is tail:
                del self._tails[session_id]
            return
        log.info("session %s: replaying %d spooled segment(s)", session_id, len(leftovers))
        writer = spool_replay.replay_writer(
            leftovers, self.settings, self.store, self.redis, self.celery
        )
        sink = SegmentSink(
            writer,
            self.settings,
            self.store,
            self.redis,
            self.spool,
            stream_id=leftovers[0].record.stream_id,
            session_id=session_id,
        )
        for record, entry in spool_replay.replay_records(leftovers):
            sink.put(record, entry)
        sink.close()
        await sink.task
        log.info("session %s: spooled segments replayed", session_id)
        try:
            await self._let_go(session_id, tail.sink, explicit=False)
        except Exception:  # its heartbeat stops: the sweep ends it after the grace window
            log.exception("session %s: grace window not opened after its replay", session_id)

    async def _adopt(self, session_id: uuid.UUID, tail: _Tail) -> Adoption:
        """Wait until the session is this process's to replay into, or is nobody's."""
        seen = None
        while True:
            try:
                async with self._handover:
                    if self._tails.get(session_id) is not tail:  # its publisher resumed it here
                        outcome = Adoption.ADOPTED
                    else:
                        outcome, seen = await asyncio.to_thread(
                            spool_replay.adopt_session,
                            self.settings.database_url,
                            session_id,
                            seen,
                            self.holder,
                        )
                        tail.resumable = outcome is Adoption.ADOPTED
                    tail.held = outcome is Adoption.ADOPTED
                if outcome is not Adoption.WAIT:
                    return outcome
            except TRANSIENT_ERRORS as exc:
                log.warning("session %s: replay waits for the database (%s)", session_id, exc)
            await asyncio.sleep(spool_replay.ADOPT_POLL_SECONDS)

    def _announce_live(self, grant: sessions.PublishGrant) -> None:
        """Tell websockets and webhooks. Best effort, like every announcement here (a webhook
        enqueue never raises): the session is live in the database whether or not Redis or
        the broker answers, and a publish must not fail (nor linger half-begun) for their
        sake (audit #4)."""
        ids = {"stream_id": str(grant.stream_id), "session_id": str(grant.session_id)}
        live = StatusEvent(grant.stream_id, StreamStatus.LIVE, grant.session_id, grant.resumed)
        _best_effort("the live event", publish_event, self.redis, live)
        if not grant.resumed:  # a resumed session never stopped being live
            enqueue_webhook(self.celery, self.settings, WebhookEvent.STREAM_LIVE, ids)

    def _announce_end(self, ended: sessions.EndedSession) -> None:
        _best_effort(
            "the ended playlists",
            write_playlists,
            self.settings,
            self.store,
            self.redis,
            ended.stream_id,
            master=True,
        )
        ids = {"stream_id": str(ended.stream_id), "session_id": str(ended.session_id)}
        idle = StatusEvent(ended.stream_id, StreamStatus.IDLE, ended.session_id)
        _best_effort("the idle event", publish_event, self.redis, idle)
        enqueue_webhook(self.celery, self.settings, WebhookEvent.STREAM_IDLE, ids)
        playback = f"{self.settings.public_http_url}{recording_path(ended.session_id)}"
        enqueue_webhook(
            self.celery,
            self.settings,
            WebhookEvent.SESSION_ENDED,
            {**ids, "playback_url": playback},
        )
        log.info("stream %s idle (session %s ended)", ended.stream_id, ended.session_id)

    async def run_housekeeping(self) -> None:
        """Heartbeats, the grace-window sweep and the outage sweep, until cancelled. The
        sweeps run at least four times per segment target, so a gap is never much later
        than a segment would have been.

        After a failed round (the database away) the heartbeat comes first, and stale
        heartbeats of other processes are judged only once the database has answered this
        one for a whole stale period: theirs were cut off too (audit #5)."""
        loop = asyncio.get_running_loop()
        next_heartbeat = 0.0
        # Judged from the start: a process that just started lost nothing.
        answering_since: float | None = loop.time() - sessions.HEARTBEAT_STALE_SECONDS
        sweep_seconds = min(SWEEP_SECONDS, self.settings.segment_seconds / 4)
        while True:
            try:
                if loop.time() >= next_heartbeat:
                    await asyncio.to_thread(
                        sessions.heartbeat, self.settings.database_url, self.held
                    )
                    next_heartbeat = loop.time() + self.settings.heartbeat_seconds
                answering_since = answering_since if answering_since is not None else loop.time()
                judge_stale = loop.time() - answering_since >= sessions.HEARTBEAT_STALE_SECONDS
                await self._sweep(judge_stale)
            except Exception:
                answering_since, next_heartbeat = None, 0.0
                log.exception("housekeeping failed; retrying")
            # Apart from the sweeps: the database being away is when it matters most.
            await asyncio.to_thread(
                _best_effort, "the spool report", self.spool.report, self.redis, self.name
            )
            await asyncio.sleep(sweep_seconds)

    async def _sweep(self, judge_stale: bool) -> None:
        held = list({*self.active, *self._tails})  # a replay not holding its session yet too
        ended = await asyncio.to_thread(
            sessions.end_expired_sessions,
            self.settings.database_url,
            self.settings.reconnect_grace_seconds,
            held=held,
            judge_stale=judge_stale,
        )
        for session in ended:
            await asyncio.to_thread(self._announce_end, session)
        advanced = await asyncio.to_thread(
            outages.advance_outages,
            self.settings.database_url,
            self.settings.presentation_hold_seconds,
            held=held,
            judge_stale=judge_stale,
        )
        for stream_id in advanced:
            await asyncio.to_thread(
                write_playlists, self.settings, self.store, self.redis, stream_id, master=False
            )

    async def run_ladder_sweeps(self) -> None:
        """The ladder sweep every `ladder_sweep_seconds`, until cancelled. Apart from the
        housekeeping above, so a broker that is slow to refuse never delays a heartbeat."""
        while True:
            try:
                await asyncio.to_thread(
                    ladder_deadline.sweep, self.settings, self.store, self.redis, self.celery
                )
            except Exception:
                log.exception("ladder sweep failed; retrying")
            await asyncio.sleep(self.settings.ladder_sweep_seconds)
