"""The publish lifecycle shared by every ingest protocol: authorise, package, end.

It also owns this process's periodic work: heartbeats for the sessions it holds, ending
sessions whose publisher did not come back within the grace window (held by any process),
advancing the playlists of streams nobody feeds (`ingest.outages`), and the ladder sweep
(`packager.ladder_deadline`): the process that makes live segments is the one that sees
their rungs never wait on a lost task, and it needs no broker for that.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable

from redis import Redis

from core.events import StatusEvent, publish_event
from core.models import StreamStatus
from core.settings import Settings
from core.storage import ObjectStore
from core.webhooks import WebhookEvent, enqueue_webhook
from ingest import outages, sessions
from ingest.holder import this_process
from ingest.publication import Publication
from ingest.spool import Spool, SpoolFullError
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


class Publisher:
    def __init__(self, settings: Settings, store: ObjectStore, redis: Redis) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.active: dict[uuid.UUID, Publication] = {}
        self.celery = make_celery(settings.redis_url)
        self.spool = Spool(settings.data_dir / "spool", settings.spool_max_bytes)
        self.name = f"{socket.gethostname()}:{os.getpid()}"  # this ingest, in reports
        self.holder = this_process()  # and on the sessions it holds

    async def begin(self, stream_key: str, protocol: str) -> tuple[Publication | None, str]:
        try:
            self.spool.check_room()
            grant = await asyncio.to_thread(
                sessions.open_publish,
                self.settings.database_url,
                stream_key,
                protocol,
                self.settings.reconnect_grace_seconds,
                hold_seconds=self.settings.presentation_hold_seconds,
                holder=self.holder,
            )
        except (sessions.PublishRefusedError, SpoolFullError) as refused:
            return None, str(refused)
        publication = Publication(
            grant, self.settings, self.store, self.redis, self.celery, self.spool
        )
        await asyncio.to_thread(self._announce_live, grant)
        self.active[grant.session_id] = publication
        log.info(
            "stream %s live (%s session %s)",
            grant.stream_id,
            "resumed" if grant.resumed else "new",
            grant.session_id,
        )
        return publication, ""

    async def end(self, publication: Publication, *, explicit: bool) -> None:
        """Store what is left, then end the session (explicit) or open the grace window."""
        session_id = publication.grant.session_id
        try:
            await publication.finish()
            ended = await asyncio.to_thread(
                sessions.close_publish, self.settings.database_url, session_id, explicit=explicit
            )
        finally:
            self.active.pop(session_id, None)
        if ended:
            await asyncio.to_thread(self._announce_end, ended)

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
                        sessions.heartbeat, self.settings.database_url, list(self.active)
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
        held = list(self.active)
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
