"""Ladder tasks on a real worker: source segments stored as ingest stores them, rungs out."""

from __future__ import annotations

import os
import secrets
import signal
import uuid
from collections.abc import Iterator

import m3u8
import pytest
from sqlalchemy import select, update

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, Stream
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from media.hls.segment_packager import PackagedSegment
from media.ladder import SOURCE, Rung
from packager import catalog, source_writer
from packager.catalog import PlaylistPolicy
from packager.celery_app import make_celery
from packager.enqueue import TRANSCODE_TASK, enqueue_ladder
from packager.keys import (
    init_name,
    master_playlist_key,
    media_key,
    media_playlist_key,
    segment_name,
)
from packager.ladder_rows import RungOutcome, load_source_segment, record_rung_segment
from tests.media import make_source, package_flv
from tests.services import wait_for

SMALL_LADDER = [
    {"name": "360p", "height": 360, "bitrate": 800_000},
    {"name": "240p", "height": 240, "bitrate": 400_000},
]


@pytest.fixture(scope="module")
def celery(settings: Settings) -> Iterator:
    app = make_celery(settings.redis_url)
    yield app
    app.close()


@pytest.fixture(scope="module")
def segments_480p(tmp_path_factory) -> list[PackagedSegment]:
    path = make_source(tmp_path_factory.mktemp("ladder") / "480p.flv", seconds=6, size="854x480")
    return package_flv(path)


@pytest.fixture(scope="module")
def segments_1080p(tmp_path_factory) -> list[PackagedSegment]:
    path = make_source(tmp_path_factory.mktemp("ladder") / "1080p.flv", seconds=8)
    return package_flv(path)


def store_session(
    settings: Settings,
    store: ObjectStore,
    segments: list[PackagedSegment],
    *,
    ladder: list[dict] | None = None,
    corrupt: frozenset[int] = frozenset(),
) -> tuple[uuid.UUID, uuid.UUID]:
    """What ingest leaves behind for a publish: objects in the bucket and rows in Postgres."""
    url = settings.database_url
    with session_scope(url) as db:
        stream = Stream(
            name="ladder",
            stream_key_hash=secrets.token_hex(32),
            status="live",
            presentation_sequence=0,
        )
        session = LiveSession(
            stream=stream, protocol="rtmp", status="live", ladder=ladder, presentation_sequence=0
        )
        db.add(stream)
        db.flush()
        stream_id, session_id = stream.id, session.id
    video = segments[0].init.video
    rendition_id = source_writer.ensure_source_rendition(
        url,
        session_id,
        codecs=segments[0].init.codecs,
        width=video.width,
        height=video.height,
        frame_rate=30.0,
        media_info={},
    )
    init_key = media_key(stream_id, SOURCE, session_id, init_name(0))
    store.put_bytes(init_key, segments[0].init.data, "video/mp4")
    for segment in segments:
        key = media_key(stream_id, SOURCE, session_id, segment_name(segment.sequence))
        data = os.urandom(len(segment.data)) if segment.sequence in corrupt else segment.data
        store.put_bytes(key, data, "video/iso.segment")
        source_writer.record_segment(
            url,
            session_id,
            source_writer.SegmentRecord(
                rendition_id=rendition_id,
                sequence=segment.sequence,
                duration=segment.duration,
                program_date_time=sessions.now(),
                discontinuity=False,
                object_key=key,
                init_key=init_key,
                size_bytes=len(segment.data),
            ),
            bandwidth=1,
            average_bandwidth=1,
            gop_seconds=None,
            bytes_ingested=0,
        )
    return stream_id, session_id


def end_session(settings: Settings, session_id: uuid.UUID) -> None:
    with session_scope(settings.database_url) as db:
        db.execute(update(LiveSession).where(LiveSession.id == session_id).values(status="ended"))


def rung_rows(settings: Settings, session_id: uuid.UUID) -> dict[str, dict[int, str]]:
    with session_scope(settings.database_url) as db:
        rows = db.execute(
            select(Rendition.name, Segment.sequence, Segment.status)
            .join(Segment, Segment.rendition_id == Rendition.id)
            .where(Rendition.session_id == session_id, Rendition.name != SOURCE)
        ).all()
    found: dict[str, dict[int, str]] = {}
    for name, sequence, status in rows:
        found.setdefault(name, {})[sequence] = status
    return found


def wait_for_rungs(
    settings: Settings, session_id: uuid.UUID, names: set[str], count: int, timeout: float = 90
) -> dict[str, dict[int, str]]:
    def done() -> bool:
        rows = rung_rows(settings, session_id)
        return set(rows) == names and all(len(rows[n]) == count for n in names)

    wait_for(done, timeout, f"{count} segments in rungs {sorted(names)}")
    return rung_rows(settings, session_id)


def playlist(settings: Settings, session_id: uuid.UUID, name: str) -> m3u8.M3U8:
    """The session's recording of one rendition."""
    policy = PlaylistPolicy(settings.segment_seconds, settings.playlist_window)
    with session_scope(settings.database_url) as db:
        session = db.get(LiveSession, session_id)
        rendition = catalog.find_rendition(db, session_id, name)
        return m3u8.loads(catalog.render_recording(db, session, rendition, policy))


def test_the_worker_makes_every_rung_of_the_session_ladder_and_mirrors_the_playlists(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    stream_id, session_id = store_session(settings, store, segments_480p, ladder=SMALL_LADDER)
    for segment in segments_480p:
        enqueue_ladder(celery, session_id, segment.sequence)
    rows = wait_for_rungs(settings, session_id, {"360p", "240p"}, len(segments_480p))
    assert all(status == "ready" for rung in rows.values() for status in rung.values())

    with session_scope(settings.database_url) as db:
        renditions = {
            r.name: r
            for r in db.scalars(select(Rendition).where(Rendition.session_id == session_id))
        }
    assert (renditions["360p"].width, renditions["360p"].height) == (640, 360)
    assert (renditions["240p"].width, renditions["240p"].height) == (428, 240)
    assert renditions["360p"].codecs == "avc1.64001e,mp4a.40.2"
    for name in ("360p", "240p"):
        rung = renditions[name]
        assert 0 < rung.average_bandwidth <= rung.bandwidth
        assert rung.frame_rate == 30.0
        assert rung.init_key == media_key(stream_id, name, session_id, "init_0.mp4")

    master = m3u8.loads(store.get_bytes(master_playlist_key(stream_id)).decode())
    assert [p.uri for p in master.playlists] == [
        "source/index.m3u8",
        "360p/index.m3u8",
        "240p/index.m3u8",
    ]
    assert master.playlists[2].stream_info.resolution == (428, 240)

    # The last task mirrors the playlists after it recorded its rows.
    def mirrored_uris() -> list[str]:
        text = store.get_bytes(media_playlist_key(stream_id, "240p")).decode()
        return [s.uri for s in m3u8.loads(text).segments]

    wait_for(lambda: mirrored_uris()[-1:] == [f"{session_id}/00000002.m4s"], 10, "mirror")

    assert not playlist(settings, session_id, "240p").is_endlist
    end_session(settings, session_id)
    assert playlist(settings, session_id, "240p").is_endlist


def test_running_a_segment_twice_overwrites_identical_objects_and_keeps_one_row(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    stream_id, session_id = store_session(settings, store, segments_480p[:1])
    enqueue_ladder(celery, session_id, 0)
    wait_for_rungs(settings, session_id, {"360p"}, 1)
    key = media_key(stream_id, "360p", session_id, segment_name(0))
    first = store.get_bytes(key)
    store.delete(key)
    celery.send_task(TRANSCODE_TASK, args=[str(session_id), 0]).get(timeout=60)
    assert store.get_bytes(key) == first
    assert rung_rows(settings, session_id) == {"360p": {0: "ready"}}


def test_a_corrupt_source_segment_is_a_gap_in_every_rung_while_later_segments_play(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p, corrupt=frozenset({1}))
    for segment in segments_480p:
        enqueue_ladder(celery, session_id, segment.sequence)
    rows = wait_for_rungs(settings, session_id, {"360p"}, len(segments_480p))
    assert rows["360p"] == {0: "ready", 1: "failed", 2: "ready"}
    end_session(settings, session_id)
    raw = playlist(settings, session_id, "360p")
    assert [s.uri.rsplit("/", 1)[-1] for s in raw.segments] == [
        "00000000.m4s",
        "00000001.m4s",
        "00000002.m4s",
    ]
    assert [s.gap_tag for s in raw.segments] == [None, True, None]
    assert raw.is_endlist


def test_a_rung_lists_only_the_prefix_of_finished_segments_and_ends_when_it_has_all(
    settings: Settings, store: ObjectStore, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p)
    rung = Rung("360p", 360, 800_000, 640)
    end_session(settings, session_id)

    def finish(sequence: int) -> None:
        with session_scope(settings.database_url) as db:
            done = load_source_segment(db, session_id, sequence)
            record_rung_segment(db, done, RungOutcome(rung, "avc1.64001e,mp4a.40.2", 1000))

    finish(2)
    assert playlist(settings, session_id, "360p").segments == []
    finish(0)
    listed = playlist(settings, session_id, "360p")
    assert [s.uri[-12:] for s in listed.segments] == ["00000000.m4s"]
    assert not listed.is_endlist
    finish(1)
    listed = playlist(settings, session_id, "360p")
    assert len(listed.segments) == 3 and listed.is_endlist


def test_a_worker_killed_mid_transcode_loses_nothing_another_finishes_it(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_1080p
) -> None:
    _, session_id = store_session(settings, store, segments_1080p)
    for segment in segments_1080p:
        enqueue_ladder(celery, session_id, segment.sequence)

    victim: dict = {}

    def transcoding() -> bool:
        for tasks in (celery.control.inspect(timeout=1).active() or {}).values():
            for task in tasks:
                if task["name"] == TRANSCODE_TASK and task["args"][0] == str(session_id):
                    victim.update(task)
                    return True
        return False

    wait_for(transcoding, 30, "a transcode running")
    sequence = victim["args"][1]
    os.kill(victim["worker_pid"], signal.SIGKILL)
    assert sequence not in rung_rows(settings, session_id).get("720p", {})

    rows = wait_for_rungs(
        settings, session_id, {"720p", "480p", "360p"}, len(segments_1080p), timeout=120
    )
    assert all(status == "ready" for rung in rows.values() for status in rung.values()), rows
    end_session(settings, session_id)
    for name in rows:
        listed = playlist(settings, session_id, name)
        assert len(listed.segments) == len(segments_1080p) and listed.is_endlist
        assert all(s.gap_tag is None for s in listed.segments)
