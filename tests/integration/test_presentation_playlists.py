"""Rows to the stream URL's playlists: one live presentation across sessions and outages.

Publishes go through the ingest's own code (`sessions.open_publish`, `Publication`, the
outage sweep) with real media stored in the test bucket; the test plays the ladder workers'
part by recording rung rows itself, and reads every playlist through the API.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import m3u8
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import select, update

from api.app import create_app
from core.db import session_scope
from core.delivery import INIT_TYPE, MEDIA_CACHE, SEGMENT_TYPE
from core.models import LiveSession, Segment, SegmentStatus, Stream
from core.settings import Settings
from core.storage import ObjectStore
from ingest import outages, sessions
from ingest.holder import of_process, this_process
from ingest.publication import Publication
from ingest.publisher import Publisher
from ingest.spool import Spool
from media.types import AccessUnit, AudioConfig, VideoConfig
from packager import timeline
from packager.celery_app import make_celery
from packager.keys import media_playlist_key
from packager.ladder_rows import (
    RungOutcome,
    VariantPolicy,
    load_source_segment,
    record_rung_segment,
)
from packager.mirror import write_playlists
from tests.media import flv_items, make_source
from tests.services import free_port

AUTH = {"Authorization": "Bearer test-token"}
GRACE, HOLD = 10.0, 30.0
TD = 2  # the 2 s target's target duration; the test sources have 2 s GOPs
RUNG = [{"name": "240p", "height": 240, "bitrate": 400_000}]

Items = list[AccessUnit | VideoConfig | AudioConfig]


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    """The test does the workers' and the outage sweep's part without the events they send
    once committed, so this API reads the version on every poll (the events' part is
    `tests/integration/test_playlist_cache.py`'s)."""
    asking = settings.model_copy(update={"playlist_fresh_seconds": 0.0})
    with TestClient(create_app(asking), headers=AUTH) as client:
        client.app.state.store.ensure_bucket()
        yield client


@pytest.fixture(scope="module")
def media_360p(tmp_path_factory) -> Items:
    """6 s of 640x360 with a 2 s GOP: three segments, and a 240p rung in the ladder above."""
    path = tmp_path_factory.mktemp("presentation") / "360p.flv"
    return flv_items(make_source(path, seconds=6, size="640x360"))


@pytest.fixture(scope="module")
def media_180p(tmp_path_factory) -> Items:
    """Too small for a 240p rung."""
    path = tmp_path_factory.mktemp("presentation") / "180p.flv"
    return flv_items(make_source(path, seconds=6, size="320x180"))


def create_stream(api: TestClient, ladder: list[dict] | None = None) -> dict:
    response = api.post("/api/v1/streams", json={"name": "continuous", "ladder": ladder or []})
    assert response.status_code == 201, response.text
    return response.json()


def publish(
    settings: Settings, store: ObjectStore, stream: dict, items: Items, *, drop: bool = False
) -> sessions.PublishGrant:
    """One publish, start to end, as the ingest runs it (the test does the ladder's work);
    `drop`: the connection is lost, no unpublish, so the grace window opens."""
    grant = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )
    asyncio.run(_feed(settings, store, replace(grant, transcode=False), items))
    sessions.close_publish(settings.database_url, grant.session_id, explicit=not drop)
    return grant


async def _feed(
    settings: Settings, store: ObjectStore, grant: sessions.PublishGrant, items: Items
) -> None:
    redis = Redis.from_url(settings.redis_url)
    spool = Spool(settings.data_dir / "spool", settings.spool_max_bytes)
    publication = Publication(grant, settings, store, redis, make_celery(settings.redis_url), spool)
    publication.push(items, 0)
    await publication.finish()
    redis.close()


def transcode_rung(settings: Settings, session_id: uuid.UUID) -> None:
    """What the workers record for every source segment of the session's 240p rung."""
    with session_scope(settings.database_url) as db:
        rows = db.scalars(
            timeline.stream_source_rows(db.get(LiveSession, session_id).stream_id).where(
                LiveSession.id == session_id, Segment.status == SegmentStatus.READY
            )
        ).all()
        for row in rows:
            source = load_source_segment(db, session_id, row.sequence)
            [rung] = source.rungs
            record_rung_segment(
                db,
                source,
                RungOutcome(rung, "avc1.64000d,mp4a.40.2", 1000),
                VariantPolicy.from_settings(settings),
            )


def last_row_times(settings: Settings, stream_id: str) -> tuple[datetime, datetime]:
    """When the stream's last timeline row was written, and where it ends (its date plus
    its duration: ahead of the clock here, the test's publishes run faster than real time)."""
    with session_scope(settings.database_url) as db:
        last = timeline.last_row(db, uuid.UUID(stream_id))
        return last.created_at, timeline.row_end(last)


def in_milliseconds(moment: datetime) -> datetime:
    """As EXT-X-PROGRAM-DATE-TIME writes it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def playlist(api: TestClient, stream_id: str, name: str) -> m3u8.M3U8:
    response = api.get(f"/hls/{stream_id}/{name}/index.m3u8")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-cache"
    return m3u8.loads(response.text)


def kinds(listed: m3u8.M3U8) -> list[str]:
    """What each listed segment is: the publisher's media, an outage's slate, or a GAP."""
    return [
        "gap" if s.gap_tag else "slate" if s.uri.startswith("slate/") else "media"
        for s in listed.segments
    ]


def assert_listed_media_answers(api: TestClient, base: str, listed: m3u8.M3U8) -> None:
    uris = {s.uri for s in listed.segments if not s.gap_tag}
    uris |= {s.init_section.uri for s in listed.segments if s.init_section and not s.gap_tag}
    for uri in uris:
        response = api.get(f"{base}/{uri}")
        assert response.status_code == 200, uri
        assert response.headers["content-type"] == (
            SEGMENT_TYPE if uri.endswith(".m4s") else INIT_TYPE
        ), uri


def test_a_new_session_continues_the_streams_numbers_and_joins_with_a_discontinuity(
    api: TestClient, settings: Settings, store: ObjectStore, media_360p: Items
) -> None:
    stream = create_stream(api)
    first = publish(settings, store, stream, media_360p)
    second = publish(settings, store, stream, media_360p)

    assert (first.first_sequence, first.discontinuity, first.target_duration) == (0, False, None)
    assert (second.first_sequence, second.discontinuity, second.target_duration) == (3, True, TD)
    assert not second.resumed and second.session_id != first.session_id
    listed = playlist(api, stream["id"], "source")
    assert (listed.media_sequence, listed.discontinuity_sequence) == (0, 0)
    assert listed.target_duration == TD
    assert [s.uri for s in listed.segments] == [
        f"{session}/{n:08d}.m4s"
        for session, numbers in ((first.session_id, range(3)), (second.session_id, range(3, 6)))
        for n in numbers
    ]
    assert [s.discontinuity for s in listed.segments] == [False] * 3 + [True] + [False] * 2
    assert listed.segments[3].init_section.uri == f"{second.session_id}/init_0.mp4"
    dates = [s.program_date_time for s in listed.segments]
    assert dates == sorted(dates)
    assert not listed.is_endlist  # the hold: the stream's next session may still join
    assert_listed_media_answers(api, f"/hls/{stream['id']}/source", listed)
    mirrored = store.get_bytes(media_playlist_key(stream["id"], "source")).decode()
    assert mirrored == api.get(f"/hls/{stream['id']}/source/index.m3u8").text

    # Each session's recording is a presentation of its own, numbered as the stream was.
    for grant, numbers in ((first, [0, 1, 2]), (second, [3, 4, 5])):
        response = api.get(f"/hls/sessions/{grant.session_id}/source/index.m3u8")
        recording = m3u8.loads(response.text)
        assert recording.playlist_type == "vod" and recording.is_endlist
        assert [int(s.uri[:8]) for s in recording.segments] == numbers
        assert recording.media_sequence == numbers[0]
        assert not any(s.discontinuity for s in recording.segments)
        assert recording.target_duration == TD
        base = f"/hls/sessions/{grant.session_id}/source"
        assert_listed_media_answers(api, base, recording)


def test_an_outage_inside_the_grace_window_advances_the_playlists_with_a_slate(
    api: TestClient, settings: Settings, store: ObjectStore, media_360p: Items
) -> None:
    stream = create_stream(api, RUNG)
    dropped = publish(settings, store, stream, media_360p, drop=True)
    transcode_rung(settings, dropped.session_id)
    written, end = last_row_times(settings, stream["id"])

    # The k-th gap is due (k - 1/2) target durations after the last media row was written.
    def sweep(seconds_after_the_media: float) -> bool:
        """Whether the sweep (of every stream in the database) changed this one."""
        at = written + timedelta(seconds=seconds_after_the_media)
        return uuid.UUID(stream["id"]) in outages.advance_outages(
            settings.database_url, HOLD, at=at
        )

    assert not sweep(0.9)
    assert len(playlist(api, stream["id"], "source").segments) == 3
    assert sweep(3.5)
    assert not sweep(4.9)  # every ingest sweeps: a second one finds nothing owed yet
    for name in ("source", "240p"):
        listed = playlist(api, stream["id"], name)
        assert kinds(listed) == ["media"] * 3 + ["slate"] * 2
        assert [s.discontinuity for s in listed.segments] == [False] * 3 + [True, False]
        assert [s.duration for s in listed.segments[3:]] == [TD, TD]
        assert [s.program_date_time for s in listed.segments[3:]] == [
            in_milliseconds(end),
            in_milliseconds(end + timedelta(seconds=TD)),
        ]
        assert listed.target_duration == TD
        slates = [s for s in listed.segments if s.uri.startswith("slate/")]
        for uri in {s.uri for s in slates} | {s.init_section.uri for s in slates}:
            response = api.get(f"/hls/{stream['id']}/{name}/{uri}")
            assert response.status_code == 200, uri
            assert response.headers["cache-control"] == MEDIA_CACHE
    # The bucket mirror holds the slate beside the playlists that list it, byte for byte.
    redis = Redis.from_url(settings.redis_url)
    write_playlists(settings, store, redis, uuid.UUID(stream["id"]), master=False)
    redis.close()
    slate = playlist(api, stream["id"], "240p").segments[3]
    for uri in (slate.uri, slate.init_section.uri):
        mirrored = store.get_bytes(f"hls/{stream['id']}/240p/{uri}")
        assert mirrored == api.get(f"/hls/{stream['id']}/240p/{uri}").content, uri

    # The publisher is back, but its first segment is a target duration away: the sweep
    # goes on until that segment takes its place, after every gap shown.
    resumed = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )
    assert resumed.resumed and resumed.session_id == dropped.session_id
    assert resumed.first_sequence == 5
    assert sweep(5.0)
    asyncio.run(_feed(settings, store, replace(resumed, transcode=False), media_360p))
    sessions.close_publish(settings.database_url, resumed.session_id, explicit=True)
    transcode_rung(settings, resumed.session_id)
    for name in ("source", "240p"):
        listed = playlist(api, stream["id"], name)
        assert listed.media_sequence == 0
        assert [int(s.uri.rpartition("/")[2][:8]) for s in listed.segments] == list(range(9))
        assert kinds(listed) == ["media"] * 3 + ["slate"] * 3 + ["media"] * 3
        assert [n for n, s in enumerate(listed.segments) if s.discontinuity] == [3, 6]
        assert listed.discontinuity_sequence == 0
        resumed_at = listed.segments[6].program_date_time
        assert resumed_at >= in_milliseconds(end) + timedelta(seconds=3 * TD)
    assert_listed_media_answers(api, f"/hls/{stream['id']}/source", listed)
    recording = m3u8.loads(api.get(f"/hls/sessions/{resumed.session_id}/240p/index.m3u8").text)
    assert [s.gap_tag for s in recording.segments] == [None] * 3 + [True] * 3 + [None] * 3


def test_after_the_hold_the_presentation_ends_and_the_next_publish_starts_a_new_one(
    api: TestClient, settings: Settings, store: ObjectStore, media_360p: Items
) -> None:
    stream = create_stream(api)
    first = publish(settings, store, stream, media_360p)
    with session_scope(settings.database_url) as db:
        ended_at = db.get(LiveSession, first.session_id).ended_at
    changed = outages.advance_outages(
        settings.database_url, HOLD, at=ended_at + timedelta(seconds=HOLD + 1)
    )
    assert uuid.UUID(stream["id"]) in changed
    listed = m3u8.loads(api.get(f"/hls/{stream['id']}/source/index.m3u8").text)
    assert listed.is_endlist
    last_listed = listed.segments[-1]
    assert kinds(listed)[-1] == "slate"
    last_number = int(last_listed.uri.rpartition("/")[2][:8])
    assert 0 < last_number - 2 <= HOLD // TD  # the hold's slate, no more
    recording = m3u8.loads(api.get(f"/hls/sessions/{first.session_id}/source/index.m3u8").text)
    assert len(recording.segments) == 3  # the hold's gaps belong to no recording

    second = publish(settings, store, stream, media_360p)
    assert not second.discontinuity and second.target_duration is None
    listed = playlist(api, stream["id"], "source")
    assert listed.media_sequence == second.first_sequence
    assert listed.media_sequence > last_number
    assert [s.uri.split("/")[0] for s in listed.segments] == [str(second.session_id)] * 3
    with session_scope(settings.database_url) as db:
        row = db.get(Stream, uuid.UUID(stream["id"]))
        assert (row.presentation_sequence, row.presentation_ended_at) == (
            second.first_sequence,
            None,
        )


def test_every_rendition_a_master_listed_answers_a_live_playlist(
    api: TestClient,
    settings: Settings,
    store: ObjectStore,
    media_360p: Items,
    media_180p: Items,
) -> None:
    stream = create_stream(api, RUNG)
    first = publish(settings, store, stream, media_360p)
    before_any_transcode = playlist(api, stream["id"], "240p")
    assert (before_any_transcode.segments, before_any_transcode.media_sequence) == ([], 0)
    assert before_any_transcode.target_duration == TD
    transcode_rung(settings, first.session_id)
    assert len(playlist(api, stream["id"], "240p").segments) == 3

    # A new session plans the rung too: until its first transcode the rung waits at its
    # last segment instead of listing the new ones as missing.
    second = publish(settings, store, stream, media_360p)
    waiting = playlist(api, stream["id"], "240p")
    assert [s.uri.split("/")[0] for s in waiting.segments] == [str(first.session_id)] * 3
    transcode_rung(settings, second.session_id)
    assert len(playlist(api, stream["id"], "240p").segments) == 6

    # A session whose source is too small for the rung: the rung lists its time as gaps.
    third = publish(settings, store, stream, media_180p)
    master = m3u8.loads(api.get(f"/hls/{stream['id']}/master.m3u8").text)
    assert [p.uri for p in master.playlists] == ["source/index.m3u8"]
    rung = playlist(api, stream["id"], "240p")
    assert rung.media_sequence == playlist(api, stream["id"], "source").media_sequence == 0
    assert [s.gap_tag for s in rung.segments] == [None] * 6 + [True] * 3
    assert rung.segments[6].discontinuity
    assert [s.uri.split("/")[0] for s in rung.segments[6:]] == [str(third.session_id)] * 3
    assert api.get(f"/hls/{stream['id']}/720p/index.m3u8").status_code == 404


def test_a_session_whose_ingest_died_gets_gaps_once_its_heartbeat_is_stale(
    api: TestClient, settings: Settings, store: ObjectStore, media_360p: Items
) -> None:
    stream = create_stream(api)
    grant = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )
    asyncio.run(_feed(settings, store, replace(grant, transcode=False), media_360p))
    # The ingest is killed here: no unpublish, no disconnect, its heartbeats stop.
    written, end = last_row_times(settings, stream["id"])
    with session_scope(settings.database_url) as db:
        heartbeat = db.scalar(
            select(LiveSession.heartbeat_at).where(LiveSession.id == grant.session_id)
        )
    fresh = heartbeat + timedelta(seconds=sessions.HEARTBEAT_STALE_SECONDS - 1)
    stream_id = uuid.UUID(stream["id"])
    at = max(fresh, written + timedelta(seconds=2 * TD))
    assert stream_id not in outages.advance_outages(settings.database_url, HOLD, at=at)
    stale = heartbeat + timedelta(seconds=sessions.HEARTBEAT_STALE_SECONDS + 1)
    at = max(stale, written + timedelta(seconds=5 * TD))
    # Not while the ingest holding the session sweeps (its own heartbeat was only late), nor
    # while the sweeping one has not reached the database for a stale period itself.
    held = [grant.session_id]
    assert stream_id not in outages.advance_outages(settings.database_url, HOLD, at=at, held=held)
    assert stream_id not in outages.advance_outages(
        settings.database_url, HOLD, at=at, judge_stale=False
    )
    assert stream_id in outages.advance_outages(settings.database_url, HOLD, at=at)
    listed = playlist(api, stream["id"], "source")
    gaps = [s for s, kind in zip(listed.segments, kinds(listed), strict=True) if kind == "slate"]
    assert len(gaps) == int((at - written).total_seconds() / TD + 0.5)  # all at once
    assert gaps[0].program_date_time == in_milliseconds(end)
    # The publisher, back on another ingest, finds the session ended (stale) and joins
    # the presentation after the gaps.
    with session_scope(settings.database_url) as db:
        db.execute(
            update(LiveSession)
            .where(LiveSession.id == grant.session_id)
            .values(heartbeat_at=heartbeat - timedelta(seconds=60))
        )
    back = publish(settings, store, stream, media_360p)
    assert back.discontinuity and back.first_sequence == 3 + len(gaps)


def _age_heartbeat(settings: Settings, session_id: uuid.UUID, seconds: float) -> None:
    with session_scope(settings.database_url) as db:
        db.execute(
            update(LiveSession)
            .where(LiveSession.id == session_id)
            .values(heartbeat_at=sessions.now() - timedelta(seconds=seconds))
        )


def test_a_stale_heartbeat_ends_a_session_unless_its_own_ingest_sweeps_or_the_database_was_away(
    api: TestClient, settings: Settings
) -> None:
    stream = create_stream(api)
    grant = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )
    # Its ingest died: the heartbeat is a stale period old, and the grace window since.
    _age_heartbeat(settings, grant.session_id, sessions.HEARTBEAT_STALE_SECONDS + GRACE + 1)

    def sweep(**judgement: object) -> list[uuid.UUID]:
        ended = sessions.end_expired_sessions(settings.database_url, GRACE, **judgement)
        return [e.session_id for e in ended]

    assert grant.session_id not in sweep(held=[grant.session_id])
    assert grant.session_id not in sweep(judge_stale=False)
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, grant.session_id).status == "live"
    assert grant.session_id in sweep()
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, grant.session_id).status == "ended"


def test_a_publisher_back_after_its_ingest_died_continues_the_session_within_the_grace(
    api: TestClient, settings: Settings
) -> None:
    """The grace window of a session whose ingest died runs from when that shows (its
    heartbeat a stale period old); until then the stream still counts as published."""
    stream = create_stream(api)
    grant = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )

    def publish_again() -> sessions.PublishGrant:
        return sessions.open_publish(
            settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
        )

    _age_heartbeat(settings, grant.session_id, sessions.HEARTBEAT_STALE_SECONDS - 3)
    with pytest.raises(sessions.PublishRefusedError, match=r"a publish in 3 s continues"):
        publish_again()
    _age_heartbeat(settings, grant.session_id, sessions.HEARTBEAT_STALE_SECONDS + 1)
    assert sessions.end_expired_sessions(settings.database_url, GRACE) == []  # in its grace
    back = publish_again()
    assert (back.session_id, back.resumed, back.discontinuity) == (grant.session_id, True, True)

    # Back only after the grace window: a new session.
    _age_heartbeat(settings, back.session_id, sessions.HEARTBEAT_STALE_SECONDS + GRACE + 1)
    late = publish_again()
    assert late.session_id != grant.session_id and not late.resumed
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, grant.session_id).status == "ended"


def test_a_publisher_back_on_the_host_of_its_dead_ingest_continues_the_session_at_once(
    api: TestClient, settings: Settings
) -> None:
    """Its holder is a process of this host that exited: it is gone now, not only once its
    heartbeat is a stale period old. One that still runs keeps the stream published."""
    stream = create_stream(api)
    running = subprocess.Popen(["sleep", "60"])
    try:
        grant = sessions.open_publish(
            settings.database_url,
            stream["stream_key"],
            "rtmp",
            GRACE,
            holder=of_process(running.pid),
        )
        with pytest.raises(sessions.PublishRefusedError, match="already being published"):
            sessions.open_publish(settings.database_url, stream["stream_key"], "rtmp", GRACE)
    finally:
        running.kill()
        running.wait()
    back = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, holder=this_process()
    )
    assert (back.session_id, back.resumed) == (grant.session_id, True)
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, grant.session_id).holder == this_process()


def test_a_publish_begins_and_ends_while_redis_is_away(
    api: TestClient, settings: Settings, store: ObjectStore
) -> None:
    """Audit #4: the live event cannot be sent, the publish goes on all the same, and its
    end neither raises nor leaves the session held."""
    stream = create_stream(api)
    away = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    publisher = Publisher(settings, store, away)

    async def publish_and_end() -> uuid.UUID:
        publication, refusal = await publisher.begin(stream["stream_key"], "rtmp")
        assert publication is not None and refusal == ""
        assert publication.grant.session_id in publisher.active
        await publisher.end(publication, explicit=True)
        return publication.grant.session_id

    session_id = asyncio.run(publish_and_end())
    assert publisher.active == {}
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, session_id).status == "ended"
    # The stream takes the next publish at once: nothing was left half-begun.
    again = sessions.open_publish(
        settings.database_url, stream["stream_key"], "rtmp", GRACE, hold_seconds=HOLD
    )
    assert again.session_id != session_id
