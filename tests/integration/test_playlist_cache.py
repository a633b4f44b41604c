"""Kept playlists against fresh renders, through a presentation's whole life (real PostgreSQL).

Two API apps keep playlists (as two API processes would), a third renders every request
(`playlist_cache_bytes=0`); rows are written by the ingest's and the workers' own
functions: source segments, rung rows landing out of order, failures, a late result after
a deadline, outage gaps, the end, the hold, a next presentation, a retention delete. After
every step each playlist is the same bytes from all three apps, and reading it again
from a keeping app is served from what it kept (so the earlier step's rendering was there
to be served had its version not moved).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

import m3u8
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import event, text

from api.app import create_app
from api.deps import get_snapshot_db
from core.db import get_engine, session_scope
from core.events import StatusEvent, publish_event
from core.models import LiveSession, StreamStatus
from core.settings import Settings
from core.storage import ObjectStore
from ingest import outages, sessions
from media.ladder import SOURCE
from packager import ladder_lease, source_writer
from packager.enqueue import LIVE_QUEUE
from packager.keys import init_name, media_key, segment_name
from packager.ladder_rows import RungOutcome, VariantPolicy, load_source_segment
from packager.ladder_rows import record_rung_segment as record_rung_row
from packager.tasks.housekeeping import expire_recordings
from tests.services import wait_for

AUTH = {"Authorization": "Bearer test-token"}
GRACE, HOLD = 10.0, 30.0
TD = 2
RUNG = [{"name": "240p", "height": 240, "bitrate": 400_000}]
RUNG_CODECS = "avc1.64000d,mp4a.40.2"


@dataclass
class Apps:
    keeping: list[TestClient]
    fresh: TestClient

    def assert_kept_as_fresh(self, paths: list[str]) -> dict[str, str]:
        texts = {}
        for path in paths:
            fresh = self.fresh.get(path)
            assert fresh.status_code == 200, (path, fresh.text)
            for client in self.keeping:
                kept = client.get(path)
                assert kept.status_code == 200, (path, kept.text)
                assert kept.content == fresh.content, path
                assert kept.headers["etag"] == fresh.headers["etag"]
                assert kept.headers["cache-control"] == fresh.headers["cache-control"]
                cache = client.app.state.playlist_cache
                hits = cache.hits
                again = client.get(path, headers={"Accept-Encoding": "identity"})
                assert again.content == fresh.content and cache.hits == hits + 1, path
                revalidated = client.get(path, headers={"If-None-Match": kept.headers["etag"]})
                assert revalidated.status_code == 304, path
            texts[path] = fresh.text
        return texts


@pytest.fixture(scope="module")
def apps(settings: Settings) -> Iterator[Apps]:
    """The rows here come without the events the ingest and the workers send once they are
    committed, so the keeping apps read the version on every request (fresh_seconds 0);
    what the events save is tested below, with them."""
    keeping = settings.model_copy(update={"playlist_fresh_seconds": 0.0})
    rendering = settings.model_copy(update={"playlist_cache_bytes": 0})
    with (
        TestClient(create_app(keeping), headers=AUTH) as first,
        TestClient(create_app(keeping), headers=AUTH) as second,
        TestClient(create_app(rendering), headers=AUTH) as fresh,
    ):
        yield Apps([first, second], fresh)


@dataclass
class Publish:
    """One connection of a publisher, writing rows as the ingest's source writer does."""

    settings: Settings
    grant: sessions.PublishGrant
    rendition_id: int = 0
    written: list[int] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings, stream_key: str) -> Publish:
        grant = sessions.open_publish(
            settings.database_url, stream_key, "rtmp", GRACE, hold_seconds=HOLD
        )
        publish = cls(settings, grant)
        publish.rendition_id = source_writer.ensure_source_rendition(
            settings.database_url,
            grant.session_id,
            codecs="avc1.64001e,mp4a.40.2",
            width=640,
            height=360,
            frame_rate=30.0,
            media_info={},
        )
        return publish

    @property
    def session_id(self) -> uuid.UUID:
        return self.grant.session_id

    def segments(self, count: int, start: datetime) -> list[int]:
        """Claim the next place on the timeline and record `count` source segments there."""
        url = self.settings.database_url
        place = source_writer.claim(url, self.grant.stream_id, self.session_id)
        numbers = list(range(place.sequence, place.sequence + count))
        for n, sequence in enumerate(numbers):
            key = media_key(self.grant.stream_id, SOURCE, self.session_id, segment_name(sequence))
            init = media_key(self.grant.stream_id, SOURCE, self.session_id, init_name(0))
            source_writer.record_segment(
                url,
                self.session_id,
                source_writer.SegmentRecord(
                    rendition_id=self.rendition_id,
                    sequence=sequence,
                    duration=float(TD),
                    program_date_time=start + timedelta(seconds=TD * n),
                    discontinuity=n == 0 and (self.grant.discontinuity or self.grant.resumed),
                    object_key=key,
                    init_key=init,
                    size_bytes=1000,
                ),
                policy=VariantPolicy.from_settings(self.settings),
                plan=not self.written and n == 0,
                gop_seconds=None,
                bytes_ingested=1000 * (len(self.written) + n + 1),
                ladder_queue=LIVE_QUEUE,
                target_duration=TD,
            )
        self.written += numbers
        return numbers

    def rung(self, sequence: int, *, made: bool = True, missed_deadline: bool = False) -> None:
        """What a worker records (`made`), or the deadline sweep (`missed_deadline`, which
        leaves the work pending) for the 240p segment at `sequence`."""
        with session_scope(self.settings.database_url) as db:
            if not missed_deadline:
                ladder_lease.finish(db, self.session_id, sequence)
            source = load_source_segment(db, self.session_id, sequence)
            [rung] = source.rungs
            outcome = RungOutcome(rung, RUNG_CODECS, 500) if made else RungOutcome(rung)
            record_rung_row(
                db,
                source,
                outcome,
                VariantPolicy.from_settings(self.settings),
                missed_deadline=missed_deadline,
            )


def paths(stream_id: str, *session_ids: uuid.UUID) -> list[str]:
    listed = [f"/hls/{stream_id}/{name}/index.m3u8" for name in (SOURCE, "240p")]
    for session_id in session_ids:
        listed += [f"/hls/sessions/{session_id}/{name}/index.m3u8" for name in (SOURCE, "240p")]
    return listed


def kinds(text: str) -> list[str]:
    return [
        "gap" if s.gap_tag else "slate" if s.uri.startswith("slate/") else "media"
        for s in m3u8.loads(text).segments
    ]


@pytest.mark.timeout(240)
def test_kept_playlists_are_the_bytes_a_fresh_render_gives_through_a_presentation_s_life(
    apps: Apps, settings: Settings, store: ObjectStore
) -> None:
    created = apps.keeping[0].post("/api/v1/streams", json={"name": "kept", "ladder": RUNG})
    assert created.status_code == 201, created.text
    stream = created.json()
    start = sessions.now()

    # Live: three source segments, no rung row yet; then rungs land out of order.
    first = Publish.open(settings, stream["stream_key"])
    assert first.segments(3, start) == [0, 1, 2]
    live = paths(stream["id"], first.session_id)
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == []  # the rung lists only the prefix it has
    first.rung(2)
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == []
    first.rung(0)
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == ["media"]
    first.rung(1, made=False)  # a failed transcode: EXT-X-GAP
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == ["media", "gap", "media"]

    # A rung segment misses its deadline (a GAP), then its late result lands: the live
    # playlists keep the GAP, the recording plays it once the session has ended.
    assert first.segments(1, start + timedelta(seconds=3 * TD)) == [3]
    apps.assert_kept_as_fresh(live)
    first.rung(3, made=False, missed_deadline=True)
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == ["media", "gap", "media", "gap"]
    first.rung(3)
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[1]]) == ["media", "gap", "media", "gap"]

    # The publisher drops: the outage sweep's gap rows are slates on the stream URL.
    sessions.close_publish(settings.database_url, first.session_id, explicit=False)
    with session_scope(settings.database_url) as db:
        written = db.get(LiveSession, first.session_id).heartbeat_at
    outages.advance_outages(settings.database_url, HOLD, at=written + timedelta(seconds=5.5))
    texts = apps.assert_kept_as_fresh(live)
    assert kinds(texts[live[0]]) == ["media"] * 4 + ["slate"] * 3

    # Back within the grace: the same session goes on after the gaps, past the window.
    resumed = Publish.open(settings, stream["stream_key"])
    assert resumed.session_id == first.session_id and resumed.grant.resumed
    resumed.rendition_id = first.rendition_id
    numbers = resumed.segments(9, start + timedelta(seconds=20))
    assert numbers == list(range(7, 16))
    for sequence in reversed(numbers):
        resumed.rung(sequence)
        if sequence % 3 == 0:
            apps.assert_kept_as_fresh(live)
    texts = apps.assert_kept_as_fresh(live)
    window = m3u8.loads(texts[live[1]])
    assert window.media_sequence == 16 - settings.playlist_window
    assert len(window.segments) == settings.playlist_window

    # The end: the recording turns VOD (the late rung result plays); the stream URL ends
    # after the hold.
    sessions.close_publish(settings.database_url, first.session_id, explicit=True)
    texts = apps.assert_kept_as_fresh(live)
    recording = m3u8.loads(texts[live[3]])
    assert recording.is_endlist and kinds(texts[live[3]])[3] == "media"
    assert not m3u8.loads(texts[live[0]]).is_endlist
    with session_scope(settings.database_url) as db:
        ended_at = db.get(LiveSession, first.session_id).ended_at
    outages.advance_outages(settings.database_url, HOLD, at=ended_at + timedelta(seconds=HOLD + 1))
    texts = apps.assert_kept_as_fresh(live)
    assert m3u8.loads(texts[live[0]]).is_endlist

    # A next presentation on the same URL, then retention deletes the first session: the
    # stream's discontinuity sequence counted its rows.
    second = Publish.open(settings, stream["stream_key"])
    second.segments(12, sessions.now())
    both = paths(stream["id"], first.session_id, second.session_id)
    apps.assert_kept_as_fresh(both)
    sessions.close_publish(settings.database_url, second.session_id, explicit=True)
    with session_scope(settings.database_url) as db:
        db.get(LiveSession, first.session_id).ended_at = ended_at - timedelta(days=400)
    texts = apps.assert_kept_as_fresh(both)
    assert m3u8.loads(texts[both[0]]).discontinuity_sequence > 0
    assert expire_recordings(settings.database_url, store, timedelta(days=300)) >= 1
    texts = apps.assert_kept_as_fresh(paths(stream["id"], second.session_id))
    assert m3u8.loads(texts[both[0]]).discontinuity_sequence == 0
    assert apps.keeping[0].get(both[2]).status_code == 404


def test_a_snapshot_session_takes_its_connection_at_its_first_query_in_repeatable_read(
    settings: Settings,
) -> None:
    """Not in the dependency: a request waiting there for a worker thread must hold no
    pool connection (`api.deps.get_snapshot_db`)."""
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))
    pool = get_engine(settings.database_url).pool
    before = pool.checkedout()
    dependency = get_snapshot_db(request)
    session = next(dependency)
    assert pool.checkedout() == before  # the route has the session, no connection yet
    assert session.scalar(text("SHOW transaction_isolation")) == "repeatable read"
    assert pool.checkedout() == before + 1  # taken by the query, not before it
    dependency.close()
    assert pool.checkedout() == before


@contextmanager
def statements(settings: Settings) -> Iterator[list[str]]:
    """Every SQL statement any session of this process sends while the block runs."""
    sent: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        sent.append(statement)

    engine = get_engine(settings.database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_poll_with_no_event_since_its_snapshot_sends_no_query_and_an_event_ends_that(
    settings: Settings,
) -> None:
    """A stream's event (sent once the rows it tells of are committed) is what makes the
    next poll ask the database; until one comes the last rendering is served as is, for
    up to `playlist_fresh_seconds`."""
    patient = settings.model_copy(update={"playlist_fresh_seconds": 600.0})
    redis = Redis.from_url(settings.redis_url)
    with TestClient(create_app(patient), headers=AUTH) as api:
        wait_for(api.app.state.hub.subscribed.is_set, 10, "the event subscription")
        created = api.post("/api/v1/streams", json={"name": "evented", "ladder": RUNG})
        assert created.status_code == 201, created.text
        stream = created.json()
        start = sessions.now()
        publish = Publish.open(settings, stream["stream_key"])
        publish.segments(2, start)
        source, rung = paths(stream["id"])
        with statements(settings) as rendering:
            listed = api.get(source)
            assert api.get(rung).status_code == 200
        assert rendering, "the first polls render from the database"
        with statements(settings) as polling:
            for _ in range(5):
                assert api.get(source).content == listed.content
                assert api.get(rung).status_code == 200
        assert polling == [], "polls with no event since ask nothing"

        publish.segments(1, start + timedelta(seconds=2 * TD))
        # Committed, but not told: still the rendering from before.
        assert api.get(source).content == listed.content
        publish_event(redis, StatusEvent(uuid.UUID(stream["id"]), StreamStatus.LIVE, None))
        wait_for(
            lambda: len(m3u8.loads(api.get(source).text).segments) == 3, 10, "the third segment"
        )
        cache = api.app.state.playlist_cache
        assert cache.unqueried >= 10
    redis.close()


def test_without_the_subscription_every_poll_asks_the_database(settings: Settings) -> None:
    """Events published while the subscription is down are lost: no rendering passes for
    current then."""
    patient = settings.model_copy(update={"playlist_fresh_seconds": 600.0})
    with TestClient(create_app(patient), headers=AUTH) as api:
        wait_for(api.app.state.hub.subscribed.is_set, 10, "the event subscription")
        created = api.post("/api/v1/streams", json={"name": "unsubscribed", "ladder": []})
        stream = created.json()
        publish = Publish.open(settings, stream["stream_key"])
        publish.segments(1, sessions.now())
        source = paths(stream["id"])[0]
        assert api.get(source).status_code == 200
        api.app.state.stream_changes.lost()
        publish.segments(1, sessions.now() + timedelta(seconds=TD))
        assert len(m3u8.loads(api.get(source).text).segments) == 2
