"""A live publish through an object-store outage: its segments wait in the ingest's spool on
disk and are stored, in order and whole, once the store is back; none is given up. What a
killed process left there is replayed into its session by the next one on the data dir,
and a publisher coming back meanwhile, or dropped and back during an outage, is taken at
once and continues after what is still spooled."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import select

from api.app import create_app
from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, SessionStatus
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from ingest.holder import of_process, this_process
from ingest.publication import Publication
from ingest.publisher import Publisher
from ingest.spool import REPORT_PREFIX, Spool, SpoolFullError, spool_reports
from ingest.spool_replay import Adoption, adopt_session
from media.ladder import SOURCE
from packager.celery_app import make_celery
from tests.media import bare_segment, flv_items, make_source, package_flv, spool_record
from tests.network_cut import NetworkCut
from tests.services import wait_for

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture
def outage_store(settings: Settings) -> Iterator[tuple[NetworkCut, ObjectStore]]:
    """The session's S3 server, reached through a network path the test can cut."""
    with NetworkCut(urlsplit(settings.s3_endpoint).port) as path:
        store = ObjectStore(
            f"http://127.0.0.1:{path.port}",
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
        )
        store.ensure_bucket()
        yield path, store


@pytest.fixture
def stream_key(settings: Settings) -> Iterator[str]:
    """A stream of the test's own (its sessions, its timeline), source only."""
    with TestClient(create_app(settings), headers=AUTH) as api:
        response = api.post("/api/v1/streams", json={"name": "spooled", "ladder": []})
        assert response.status_code == 201, response.text
        yield response.json()["stream_key"]


def _recorded(settings: Settings, session_id: uuid.UUID) -> list[Segment]:
    with session_scope(settings.database_url) as db:
        return list(
            db.scalars(
                select(Segment)
                .join(Rendition)
                .where(Rendition.session_id == session_id, Rendition.name == SOURCE)
                .order_by(Segment.sequence)
            )
        )


def test_segments_closed_while_the_store_is_down_are_stored_whole_once_it_is_back(
    settings: Settings,
    outage_store: tuple[NetworkCut, ObjectStore],
    stream_key: str,
    tmp_path: Path,
) -> None:
    path, store = outage_store
    source = make_source(tmp_path / "live.flv", seconds=8, size="320x240")
    items = flv_items(source)
    expected = len(package_flv(source))  # the last one closes when the publish ends
    grant = sessions.open_publish(settings.database_url, stream_key, "rtmp", 10.0)
    spool = Spool(tmp_path / "spool", settings.spool_max_bytes)
    redis = Redis.from_url(settings.redis_url)
    celery = make_celery(settings.redis_url)

    async def publish_through_the_outage() -> None:
        publication = Publication(
            replace(grant, transcode=False), settings, store, redis, celery, spool
        )
        path.cut()
        publication.push(items, 0)
        closed = expected - 1
        # Everything closed so far is on disk, and nothing is recorded without its object.
        await asyncio.to_thread(wait_for, lambda: spool.waiting == closed, 30, "spooled")
        assert len(list((tmp_path / "spool").rglob("*.m4s"))) == closed
        await asyncio.sleep(3)  # several whole tries fail meanwhile
        assert _recorded(settings, grant.session_id) == []
        path.restore()
        await publication.finish()

    asyncio.run(publish_through_the_outage())
    spool.release(grant.session_id)  # the publisher's, once no later sink of the session waits
    redis.close()
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)

    rows = _recorded(settings, grant.session_id)
    assert [row.sequence for row in rows] == list(range(expected))
    assert (spool.used_bytes, spool.waiting) == (0, 0)
    assert list((tmp_path / "spool").rglob("*")) == []
    objects = [store.get_bytes(row.object_key) for row in rows]
    assert [len(data) for data in objects] == [row.size_bytes for row in rows]
    media = store.get_bytes(rows[0].init_key) + b"".join(objects)
    with av.open(io.BytesIO(media)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 8 * 30  # every frame of the 8 s source, decoded


def test_a_full_spool_refuses_new_publishes_with_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1000)
    spool.check_room()
    entry = spool.put(spool_record(bare_segment(7), uuid.uuid4()), b"x" * 1000)
    with pytest.raises(SpoolFullError, match=r"NEBULA_SPOOL_MAX_BYTES"):
        spool.check_room()
    assert spool.read(entry) == b"x" * 1000
    spool.remove(entry)
    spool.check_room()
    assert (spool.used_bytes, spool.waiting) == (0, 0)


def _status(settings: Settings, session_id: uuid.UUID) -> str:
    with session_scope(settings.database_url) as db:
        return db.get(LiveSession, session_id).status


def _all_stored(settings: Settings, session_id: uuid.UUID, spool: Spool, closed: int) -> bool:
    return spool.waiting == 0 and len(_recorded(settings, session_id)) == closed


def _frames(store: ObjectStore, rows: list[Segment]) -> int:
    """Video frames the recording decodes to, init by init."""
    frames = 0
    for init_key in dict.fromkeys(row.init_key for row in rows):
        media = store.get_bytes(init_key) + b"".join(
            store.get_bytes(row.object_key) for row in rows if row.init_key == init_key
        )
        with av.open(io.BytesIO(media)) as container:
            frames += sum(1 for _ in container.decode(video=0))
    return frames


def _killed_publication(
    settings: Settings,
    store: ObjectStore,
    path: NetworkCut,
    spool_dir: Path,
    stream_key: str,
    source: Path,
) -> tuple[sessions.PublishGrant, int, int]:
    """A publication that stored what closed of the first half of `source`, then spooled
    the rest with the store cut, and whose process died (its tasks are gone, its files are
    not; nothing flushed the open segment). Returns its grant, how many it stored, and how
    many it left in the spool."""
    items = flv_items(source)
    closed = len(package_flv(source)) - 1
    grant = sessions.open_publish(settings.database_url, stream_key, "rtmp", 10.0)
    redis = Redis.from_url(settings.redis_url)

    async def publish_until_killed() -> int:
        spool = Spool(spool_dir, settings.spool_max_bytes)
        publication = Publication(
            grant, settings, store, redis, make_celery(settings.redis_url), spool
        )
        publication.push(items[: len(items) // 2], 0)
        stored = publication.resume_point().next_sequence - grant.first_sequence
        await asyncio.to_thread(
            wait_for, lambda: _all_stored(settings, grant.session_id, spool, stored), 30, "stored"
        )
        path.cut()
        publication.push(items[len(items) // 2 :], 0)
        await asyncio.to_thread(wait_for, lambda: spool.waiting == closed - stored, 30, "spooled")
        return stored

    stored = asyncio.run(publish_until_killed())
    redis.close()
    return grant, stored, closed - stored


def _heartbeat_stale(settings: Settings, session_id: uuid.UUID) -> None:
    """What the dead process's heartbeat is once a stale period passed."""
    with session_scope(settings.database_url) as db:
        db.get(LiveSession, session_id).heartbeat_at = sessions.now() - timedelta(
            seconds=sessions.HEARTBEAT_STALE_SECONDS + 1
        )


@pytest.mark.timeout(180)
def test_a_killed_publications_leftovers_are_replayed_and_a_resumed_publish_follows_them(
    settings: Settings,
    outage_store: tuple[NetworkCut, ObjectStore],
    stream_key: str,
    tmp_path: Path,
) -> None:
    path, store = outage_store
    first_source = make_source(tmp_path / "first.flv", seconds=12, size="320x240")
    second_source = make_source(tmp_path / "second.flv", seconds=6, size="320x240")
    grant, stored, left = _killed_publication(
        settings, store, path, tmp_path / "spool" / "0", stream_key, first_source
    )
    assert stored >= 1 and left >= 2
    _heartbeat_stale(settings, grant.session_id)
    own = settings.model_copy(update={"data_dir": tmp_path})
    redis = Redis.from_url(settings.redis_url)

    async def replay_and_resume() -> Publisher:
        publisher = Publisher(own, store, redis)
        assert publisher.spool.waiting == left  # read back, counted for this process
        publisher.start_replays()
        await asyncio.to_thread(
            wait_for, lambda: grant.session_id in publisher.held, 30, "the session adopted"
        )
        publication, reason = await publisher.begin(stream_key, "rtmp")
        assert publication is not None, reason  # at once: the session is this process's
        assert (publication.grant.session_id, publication.grant.resumed) == (grant.session_id, True)
        assert publication.grant.first_sequence == stored + left  # after the leftovers
        assert publication.grant.init_index == 1
        publication.push(flv_items(second_source), 0)
        await asyncio.sleep(3)  # the store is still cut: nothing of either is recorded yet
        assert len(_recorded(settings, grant.session_id)) == stored
        path.restore()
        await publisher.end(publication, explicit=True)
        return publisher

    publisher = asyncio.run(replay_and_resume())
    redis.close()

    rows = _recorded(settings, grant.session_id)
    second = len(package_flv(second_source))
    assert [row.sequence for row in rows] == list(range(stored + left + second))
    assert [row.discontinuity for row in rows] == [
        n in (stored, stored + left) for n in range(len(rows))
    ]  # where the replay took over, and where the resumed publish began
    assert len({row.init_key for row in rows}) == 2
    ends = [row.program_date_time + timedelta(seconds=row.duration) for row in rows]
    # The replayed ones continue where the stored ones end on the wall clock.
    assert abs(rows[stored].program_date_time - ends[stored - 1]) < timedelta(milliseconds=1)
    late = [row.program_date_time - end for row, end in zip(rows[1:], ends, strict=False)]
    assert min(late) > -timedelta(milliseconds=1)  # none overlaps the one before it
    assert (publisher.spool.used_bytes, publisher.spool.waiting) == (0, 0)
    assert [p for p in (tmp_path / "spool").rglob("*") if p.suffix in (".m4s", ".json")] == []
    kept = sum(segment.video_frames for segment in package_flv(first_source)[:-1])
    assert _frames(store, rows) == kept + 6 * 30
    assert _status(settings, grant.session_id) == SessionStatus.ENDED


@pytest.mark.timeout(120)
def test_leftovers_of_a_session_that_ended_meanwhile_are_set_aside_and_counted(
    settings: Settings,
    outage_store: tuple[NetworkCut, ObjectStore],
    stream_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, store = outage_store
    source = make_source(tmp_path / "live.flv", seconds=8, size="320x240")
    grant, stored, left = _killed_publication(
        settings, store, path, tmp_path / "spool" / "0", stream_key, source
    )
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)
    path.restore()
    own = settings.model_copy(update={"data_dir": tmp_path})
    redis = Redis.from_url(settings.redis_url)

    async def replay() -> Publisher:
        publisher = Publisher(own, store, redis)
        publisher.start_replays()
        await asyncio.to_thread(wait_for, lambda: publisher.spool.unplaced == left, 30, "set aside")
        publisher.spool.report(redis, "test-ingest:1")
        return publisher

    with caplog.at_level(logging.WARNING, logger="ingest.spool"):
        publisher = asyncio.run(replay())
    report = spool_reports(redis)["test-ingest:1"]
    redis.delete(f"{REPORT_PREFIX}test-ingest:1")
    redis.close()
    assert (report["unplaced"], report["waiting"], report["used_bytes"]) == (left, 0, 0)
    assert publisher.held == []
    assert f"session {grant.session_id}" in caplog.text
    assert "the session ended before they could be stored" in caplog.text
    assert len(_recorded(settings, grant.session_id)) == stored  # nothing out of order
    aside = tmp_path / "spool" / "0" / "unplaced" / str(grant.session_id)
    assert len(list(aside.glob("*.m4s"))) == len(list(aside.glob("*.json"))) == left


def test_a_session_is_adopted_for_its_leftovers_only_once_nobody_holds_it(
    settings: Settings, stream_key: str
) -> None:
    url = settings.database_url
    me = this_process()
    running = subprocess.Popen(["sleep", "60"])
    try:
        grant = sessions.open_publish(url, stream_key, "rtmp", 10.0, holder=of_process(running.pid))
        outcome, seen = adopt_session(url, grant.session_id, None, me)
        assert outcome is Adoption.WAIT  # its heartbeat is fresh and its holder lives
        sessions.heartbeat(url, [grant.session_id])
        assert adopt_session(url, grant.session_id, seen, me) == (Adoption.TAKEN, None)
        _heartbeat_stale(settings, grant.session_id)
        outcome, at = adopt_session(url, grant.session_id, None, me)
        assert outcome is Adoption.ADOPTED
        with session_scope(url) as db:
            held = db.get(LiveSession, grant.session_id)
            assert (held.heartbeat_at, held.holder) == (at, me)  # held now, by us
    finally:
        running.kill()
        running.wait()
    sessions.close_publish(url, grant.session_id, explicit=True)
    assert adopt_session(url, grant.session_id, None, me) == (Adoption.ENDED, None)


def test_a_session_whose_holder_died_on_this_host_is_adopted_at_once(
    settings: Settings, stream_key: str
) -> None:
    """No wait for a stale heartbeat: a process that no longer runs holds nothing."""
    url = settings.database_url
    gone = subprocess.Popen(["sleep", "60"])
    grant = sessions.open_publish(url, stream_key, "rtmp", 10.0, holder=of_process(gone.pid))
    gone.kill()
    gone.wait()
    outcome, _ = adopt_session(url, grant.session_id, None, this_process())
    assert outcome is Adoption.ADOPTED


@pytest.mark.timeout(180)
def test_a_publisher_dropped_during_an_outage_is_taken_back_at_once_and_follows_its_old_segments(
    settings: Settings,
    outage_store: tuple[NetworkCut, ObjectStore],
    stream_key: str,
    tmp_path: Path,
) -> None:
    path, store = outage_store
    first_source = make_source(tmp_path / "first.flv", seconds=8, size="320x240")
    second_source = make_source(tmp_path / "second.flv", seconds=6, size="320x240")
    first_items = flv_items(first_source)
    own = settings.model_copy(update={"data_dir": tmp_path})
    redis = Redis.from_url(settings.redis_url)

    async def drop_and_come_back() -> uuid.UUID:
        publisher = Publisher(own, store, redis)
        first, reason = await publisher.begin(stream_key, "rtmp")
        assert first is not None, reason
        first.push(first_items[: len(first_items) // 2], 0)
        closed = first.resume_point().next_sequence - first.grant.first_sequence
        await asyncio.to_thread(
            wait_for,
            lambda: _all_stored(settings, first.grant.session_id, publisher.spool, closed),
            30,
            "stored",
        )
        path.cut()
        first.push(first_items[len(first_items) // 2 :], 0)
        dropped = asyncio.create_task(publisher.end(first, explicit=False))
        await asyncio.to_thread(wait_for, lambda: publisher.spool.waiting > 0, 30, "spooled")
        second, reason = await publisher.begin(stream_key, "rtmp")
        assert second is not None, reason  # not "already being published"
        assert second.grant.session_id == first.grant.session_id
        assert second.grant.first_sequence == first.resume_point().next_sequence
        assert not dropped.done()  # the old connection's segments still wait
        second.push(flv_items(second_source), 0)
        path.restore()
        await publisher.end(second, explicit=True)
        await dropped
        assert publisher.held == []
        return first.grant.session_id

    session_id = asyncio.run(drop_and_come_back())
    redis.close()
    rows = _recorded(settings, session_id)
    first_count = len(package_flv(first_source))
    assert [row.sequence - rows[0].sequence for row in rows] == list(
        range(first_count + len(package_flv(second_source)))
    )
    assert [row.discontinuity for row in rows[1:]] == [
        n == first_count for n in range(1, len(rows))
    ]
    assert len({row.init_key for row in rows}) == 2
    assert _frames(store, rows) == (8 + 6) * 30
    assert _status(settings, session_id) == SessionStatus.ENDED
    assert [p for p in (tmp_path / "spool").rglob("*") if p.suffix in (".m4s", ".json")] == []
