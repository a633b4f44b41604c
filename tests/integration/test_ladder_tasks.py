"""Ladder tasks on a real worker: source segments stored as ingest stores them, rungs out."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import m3u8
import pytest
from celery import Celery
from redis import Redis
from sqlalchemy import select, update

from core.db import session_scope
from core.migrate import upgrade
from core.models import LadderJob, LiveSession, Rendition, Segment, Stream
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from media.hls.bandwidth import SizedSegment, peak_segment_bit_rate
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.ladder import SOURCE, Rung
from packager import catalog, ladder_deadline, ladder_outbox, source_writer
from packager.catalog import PlaylistPolicy
from packager.celery_app import make_celery
from packager.enqueue import LIVE_QUEUE, TRANSCODE_TASK, UPLOAD_QUEUE, enqueue_ladder
from packager.keys import (
    init_name,
    master_playlist_key,
    media_key,
    media_playlist_key,
    segment_name,
)
from packager.ladder_rows import (
    RungOutcome,
    VariantPolicy,
    load_source_segment,
    record_rung_segment,
)
from tests.conftest import ARTIFACTS
from tests.media import make_source, package_flv
from tests.services import (
    free_port,
    fresh_database,
    nebula_process,
    redis_server,
    settings_env,
    tcp_open,
    wait_for,
)

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


def new_session(
    settings: Settings, *, ladder: list[dict] | None = None, upload: bool = False
) -> tuple[uuid.UUID | None, uuid.UUID]:
    """A live session of a new stream, or an uploaded file's session (no stream)."""
    with session_scope(settings.database_url) as db:
        stream = None
        if not upload:
            stream = Stream(
                name="ladder",
                stream_key_hash=secrets.token_hex(32),
                status="live",
                presentation_sequence=0,
            )
        session = LiveSession(
            stream=stream,
            protocol="upload" if upload else "rtmp",
            status="live",
            ladder=ladder,
            presentation_sequence=None if upload else 0,
        )
        db.add(session)
        db.flush()
        return (stream.id if stream else None), session.id


def source_rendition(
    settings: Settings,
    session_id: uuid.UUID,
    first: PackagedSegment,
    announced: dict | None = None,
) -> int:
    video = first.init.video
    return source_writer.ensure_source_rendition(
        settings.database_url,
        session_id,
        codecs=first.init.codecs,
        width=video.width,
        height=video.height,
        frame_rate=30.0,
        media_info={"announced": announced} if announced else {},
    )


def record_source_segment(
    settings: Settings,
    session_id: uuid.UUID,
    rendition_id: int,
    segment: PackagedSegment,
    key: str,
    init_key: str,
    ladder_queue: str | None,
    *,
    plan: bool,
) -> None:
    source_writer.record_segment(
        settings.database_url,
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
        policy=VariantPolicy.from_settings(settings),
        plan=plan,
        gop_seconds=None,
        bytes_ingested=0,
        ladder_queue=ladder_queue,
    )


def store_session(
    settings: Settings,
    store: ObjectStore,
    segments: list[PackagedSegment],
    *,
    ladder: list[dict] | None = None,
    corrupt: frozenset[int] = frozenset(),
    announced: dict | None = None,
    planned: bool = True,
    ladder_queue: str | None = LIVE_QUEUE,
) -> tuple[uuid.UUID, uuid.UUID]:
    """What ingest leaves behind for a publish: objects in the bucket and rows in Postgres
    (with each segment's ladder work in the outbox, not sent yet, unless `ladder_queue` is
    None; the ladder planned with the first segment, as the source writer does)."""
    stream_id, session_id = new_session(settings, ladder=ladder)
    rendition_id = source_rendition(settings, session_id, segments[0], announced)
    init_key = media_key(stream_id, SOURCE, session_id, init_name(0))
    store.put_bytes(init_key, segments[0].init.data, "video/mp4")
    for segment in segments:
        key = media_key(stream_id, SOURCE, session_id, segment_name(segment.sequence))
        data = os.urandom(len(segment.data)) if segment.sequence in corrupt else segment.data
        store.put_bytes(key, data, "video/iso.segment")
        record_source_segment(
            settings,
            session_id,
            rendition_id,
            segment,
            key,
            init_key,
            ladder_queue,
            plan=planned and segment is segments[0],
        )
    return stream_id, session_id


def send_ladder(
    settings: Settings, celery, session_id: uuid.UUID, segments: list[PackagedSegment]
) -> None:
    """What the ingest does once a segment is recorded: send its ladder work."""
    for segment in segments:
        ladder_outbox.relay(celery, settings.database_url, session_id, segment.sequence, LIVE_QUEUE)


def end_session(settings: Settings, session_id: uuid.UUID) -> None:
    with session_scope(settings.database_url) as db:
        db.execute(update(LiveSession).where(LiveSession.id == session_id).values(status="ended"))


def outbox(settings: Settings, session_id: uuid.UUID) -> list[LadderJob]:
    with session_scope(settings.database_url) as db:
        return list(
            db.scalars(
                select(LadderJob)
                .where(LadderJob.session_id == session_id)
                .order_by(LadderJob.sequence)
            )
        )


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
    send_ladder(settings, celery, session_id, segments_480p)
    rows = wait_for_rungs(settings, session_id, {"360p", "240p"}, len(segments_480p))
    assert all(status == "ready" for rung in rows.values() for status in rung.values())

    with session_scope(settings.database_url) as db:
        renditions = {
            r.name: r
            for r in db.scalars(select(Rendition).where(Rendition.session_id == session_id))
        }
    assert (renditions["360p"].width, renditions["360p"].height) == (640, 360)
    assert (renditions["240p"].width, renditions["240p"].height) == (428, 240)
    assert renditions["360p"].codecs == "avc1.64001f,mp4a.40.2"
    assert renditions["240p"].codecs == "avc1.64001e,mp4a.40.2"
    for name in ("360p", "240p"):
        rung = renditions[name]
        assert 0 < rung.average_bandwidth <= rung.bandwidth
        assert rung.frame_rate == 30.0
        assert rung.init_key == media_key(stream_id, name, session_id, "init_0.mp4")

    # A CDN in front of the bucket keeps rung media for good and revalidates playlists.
    for name, kind in ((segment_name(0), "video/iso.segment"), (init_name(0), "video/mp4")):
        stat = store.client.stat_object(
            store.bucket, media_key(stream_id, "360p", session_id, name)
        )
        assert (stat.content_type, stat.metadata["Cache-Control"]) == (
            kind,
            "public, max-age=31536000, immutable",
        )
    stat = store.client.stat_object(store.bucket, media_playlist_key(stream_id, "360p"))
    assert stat.metadata["Cache-Control"] == "no-cache"
    master = m3u8.loads(store.get_bytes(master_playlist_key(stream_id)).decode())
    # The source's first segment, 2.8 Mbit/s, is nearer 2 Mbit/s than 360p's seeded 1.06.
    assert [p.uri for p in master.playlists] == [
        "source/index.m3u8",
        "360p/index.m3u8",
        "240p/index.m3u8",
    ]
    assert master.playlists[2].stream_info.resolution == (428, 240)

    def mirrored_last() -> str:
        mirrored = m3u8.loads(store.get_bytes(media_playlist_key(stream_id, "240p")).decode())
        return [s.uri for s in mirrored.segments][-1]

    # The mirror follows the rows: the task that records the last rung writes it just after.
    wait_for(lambda: mirrored_last() == f"{session_id}/00000002.m4s", 30, "the mirror")

    assert not playlist(settings, session_id, "240p").is_endlist
    end_session(settings, session_id)
    assert playlist(settings, session_id, "240p").is_endlist


def test_a_task_redelivered_after_its_rungs_are_made_does_nothing_unless_its_work_is_pending(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    stream_id, session_id = store_session(settings, store, segments_480p[:1])
    send_ladder(settings, celery, session_id, segments_480p[:1])
    wait_for_rungs(settings, session_id, {"360p"}, 1)
    assert outbox(settings, session_id) == []
    key = media_key(stream_id, "360p", session_id, segment_name(0))
    first = store.get_bytes(key)
    store.delete(key)

    # A copy of the message (a broker redelivery) finds the work done.
    assert celery.send_task(TRANSCODE_TASK, args=[str(session_id), 0]).get(timeout=60) == {}
    assert [o.key for o in store.list_keys(key)] == []

    # The worker died after storing the rungs but before its rows: the work is still pending,
    # and running it again makes the same objects and keeps one row.
    with session_scope(settings.database_url) as db:
        segment = db.scalars(
            select(Segment)
            .join(Rendition)
            .where(Rendition.session_id == session_id, Rendition.name == SOURCE)
        ).one()
        db.add(
            LadderJob(
                segment_id=segment.id, session_id=session_id, sequence=0, queue=LIVE_QUEUE, sends=1
            )
        )
    celery.send_task(TRANSCODE_TASK, args=[str(session_id), 0], queue=LIVE_QUEUE).get(timeout=60)
    assert store.get_bytes(key) == first
    assert rung_rows(settings, session_id) == {"360p": {0: "ready"}}
    rung = _renditions(settings, session_id)["360p"]
    assert (rung.media_bytes, rung.media_seconds) == (len(first), segments_480p[0].duration)
    assert outbox(settings, session_id) == []


def test_a_corrupt_source_segment_is_a_gap_in_every_rung_while_later_segments_play(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p, corrupt=frozenset({1}))
    send_ladder(settings, celery, session_id, segments_480p)
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


def finish_360p(settings: Settings, session_id: uuid.UUID, sequence: int) -> None:
    """What a worker records once it has made the 360p segment at `sequence`."""
    with session_scope(settings.database_url) as db:
        done = load_source_segment(db, session_id, sequence)
        record_rung_segment(
            db,
            done,
            RungOutcome(Rung("360p", 360, 800_000, 640), "avc1.64001f,mp4a.40.2", 1000),
            VariantPolicy.from_settings(settings),
        )


def test_a_rung_lists_only_the_prefix_of_finished_segments_and_ends_when_it_has_all(
    settings: Settings, store: ObjectStore, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p, ladder_queue=None)
    end_session(settings, session_id)

    finish_360p(settings, session_id, 2)
    assert playlist(settings, session_id, "360p").segments == []
    finish_360p(settings, session_id, 0)
    listed = playlist(settings, session_id, "360p")
    assert [s.uri[-12:] for s in listed.segments] == ["00000000.m4s"]
    assert not listed.is_endlist
    finish_360p(settings, session_id, 1)
    listed = playlist(settings, session_id, "360p")
    assert len(listed.segments) == 3 and listed.is_endlist


def test_the_master_waits_for_every_rung_s_first_segment_not_any_segment(
    settings: Settings, store: ObjectStore, segments_480p
) -> None:
    """A master read while a rung has only a later segment would send players to an empty
    rung playlist (Shaka fails its load with 4053, HLS_EMPTY_MEDIA_PLAYLIST)."""
    ladder = SMALL_LADDER[:1]
    _, session_id = store_session(settings, store, segments_480p, ladder=ladder, ladder_queue=None)

    def master() -> str | None:
        with session_scope(settings.database_url) as db:
            return catalog.servable_master(db, db.get(LiveSession, session_id))

    finish_360p(settings, session_id, 1)
    assert master() is None
    finish_360p(settings, session_id, 0)
    variants = [p.uri for p in m3u8.loads(master()).playlists]
    assert sorted(variants) == ["360p/index.m3u8", "source/index.m3u8"]


def test_a_worker_killed_mid_transcode_loses_nothing_another_finishes_it(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_1080p
) -> None:
    _, session_id = store_session(settings, store, segments_1080p)
    send_ladder(settings, celery, session_id, segments_1080p)

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


def _renditions(settings: Settings, session_id: uuid.UUID) -> dict[str, Rendition]:
    with session_scope(settings.database_url) as db:
        return {
            r.name: r
            for r in db.scalars(select(Rendition).where(Rendition.session_id == session_id))
        }


def _master(settings: Settings, session_id: uuid.UUID) -> str | None:
    with session_scope(settings.database_url) as db:
        return catalog.render_master(db.get(LiveSession, session_id).renditions)


def test_the_first_master_lists_the_whole_ladder_with_seeded_values_before_any_rung_segment(
    settings: Settings, store: ObjectStore, segments_1080p
) -> None:
    """No worker runs here: the plan made with the first source segment is the master."""
    announced = {"videodatarate": 2500, "audiodatarate": 128}  # kbit/s, as OBS sends them
    _, session_id = store_session(settings, store, segments_1080p[:1], announced=announced)
    assert rung_rows(settings, session_id) == {}

    master = m3u8.loads(_master(settings, session_id))
    variants = {p.uri.split("/")[0]: p.stream_info for p in master.playlists}
    # 480p's seed, 1.75 Mbit/s, is nearest 2 Mbit/s; then the source and the rungs tallest first.
    assert list(variants) == ["480p", "source", "720p", "360p"]
    codecs = {"720p": "avc1.640020", "480p": "avc1.64001f", "360p": "avc1.64001f"}
    for name, video_bitrate in (("720p", 3_000_000), ("480p", 1_400_000), ("360p", 800_000)):
        info = variants[name]
        assert info.codecs == f"{codecs[name]},mp4a.40.2"
        # max_bitrate (1.1 x) plus the announced 128 kbit/s audio, plus 5 % overhead.
        assert info.bandwidth == round((video_bitrate * 1.1 + 128_000) * 1.05)
        assert info.average_bandwidth == round((video_bitrate + 128_000) * 1.05)
    assert variants["source"].bandwidth >= round(2_628_000 * 1.05)
    assert variants["source"].codecs == segments_1080p[0].init.codecs
    assert all(info.frame_rate == 30.0 for info in variants.values())
    assert all(info.closed_captions == "NONE" for info in variants.values())


def test_no_master_is_served_before_the_source_has_a_segment(settings: Settings) -> None:
    with session_scope(settings.database_url) as db:
        stream = Stream(name="early", stream_key_hash=secrets.token_hex(32), status="live")
        session = LiveSession(stream=stream, protocol="rtmp", status="live")
        db.add(stream)
        db.flush()
        session_id = session.id
    source_writer.ensure_source_rendition(
        settings.database_url,
        session_id,
        codecs="avc1.640028,mp4a.40.2",
        width=1920,
        height=1080,
        frame_rate=30.0,
        media_info={},
    )
    assert _master(settings, session_id) is None


def test_rung_bandwidths_follow_the_rfc_runs_and_only_rise_from_their_seeds(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p, ladder=SMALL_LADDER)
    seeds = {name: r.bandwidth for name, r in _renditions(settings, session_id).items()}
    for segment in segments_480p:
        enqueue_ladder(celery, session_id, segment.sequence, LIVE_QUEUE)
    wait_for_rungs(settings, session_id, {"360p", "240p"}, len(segments_480p))

    with session_scope(settings.database_url) as db:
        rows = db.execute(
            select(Rendition.name, Segment.sequence, Segment.size_bytes, Segment.duration)
            .join(Segment, Segment.rendition_id == Rendition.id)
            .where(Rendition.session_id == session_id)
        ).all()
    renditions = _renditions(settings, session_id)
    for name, rendition in renditions.items():
        sized = [SizedSegment(q, b, d) for n, q, b, d in rows if n == name]
        peak = peak_segment_bit_rate(sized, 2)
        assert rendition.bandwidth == max(seeds[name], peak), name
        total_bytes, total_seconds = (
            sum(s.size_bytes for s in sized),
            sum(s.duration for s in sized),
        )
        assert rendition.media_bytes == total_bytes
        assert rendition.media_seconds == pytest.approx(total_seconds)
        average = round(total_bytes * 8 / total_seconds)
        assert rendition.average_bandwidth == min(average, rendition.bandwidth), name


def test_a_rung_init_is_written_once_by_the_first_task_that_makes_it(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    stream_id, session_id = store_session(settings, store, segments_480p)
    enqueue_ladder(celery, session_id, 0, LIVE_QUEUE)
    wait_for_rungs(settings, session_id, {"360p"}, 1)
    init_key = media_key(stream_id, "360p", session_id, init_name(0))
    assert b"avcC" in store.get_bytes(init_key)
    store.put_bytes(init_key, b"written by the first task", "video/mp4")
    for segment in segments_480p[1:]:
        enqueue_ladder(celery, session_id, segment.sequence, LIVE_QUEUE)
    wait_for_rungs(settings, session_id, {"360p"}, len(segments_480p))
    assert store.get_bytes(init_key) == b"written by the first task"


def test_a_session_recorded_before_ladders_were_planned_gets_its_plan_from_its_first_task(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    _, session_id = store_session(settings, store, segments_480p[:1], planned=False)
    assert set(_renditions(settings, session_id)) == {SOURCE}
    enqueue_ladder(celery, session_id, 0, LIVE_QUEUE)
    wait_for_rungs(settings, session_id, {"360p"}, 1)
    renditions = _renditions(settings, session_id)
    assert renditions["360p"].codecs == "avc1.64001f,mp4a.40.2"
    assert {r.position for r in renditions.values()} == {0, 1}


def test_segments_that_close_while_redis_is_down_get_their_rungs_once_it_is_back(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    # The publisher's Celery and Redis point at a port nobody listens on: Redis is down.
    down = f"redis://127.0.0.1:{free_port()}/0"
    dead_celery, dead_redis = make_celery(down), Redis.from_url(down)
    segments = segments_480p
    packager = SegmentPackager(settings.segment_seconds)  # for its meters only
    stream_id, session_id = new_session(settings)
    writer = source_writer.SourceWriter(
        settings,
        store,
        dead_redis,
        dead_celery,
        stream_id=stream_id,
        session_id=session_id,
        timeline_start=0,
        transcode=True,
    )
    for segment in segments:
        writer.write(segment, packager, metadata={}, bytes_ingested=0)

    with session_scope(settings.database_url) as db:
        source = catalog.find_rendition(db, session_id, SOURCE)
        assert len(source.segments) == len(segments)
    assert [(job.sequence, job.sent_at, job.sends) for job in outbox(settings, session_id)] == [
        (segment.sequence, None, 0) for segment in segments
    ]
    assert rung_rows(settings, session_id) == {}

    # Redis is back: the ladder sweep every ingest runs sends what was never sent.
    redis = Redis.from_url(settings.redis_url)

    def swept() -> bool:
        ladder_deadline.sweep(settings, store, redis, celery)
        return all(job.sent_at for job in outbox(settings, session_id))

    wait_for(swept, 30, "the sweep sending the ladder")
    # Each job leaves the outbox with the rung rows its task recorded.
    wait_for(lambda: outbox(settings, session_id) == [], 90, "every rung made")
    rows = rung_rows(settings, session_id)
    assert sorted(rows["360p"]) == [segment.sequence for segment in segments]
    assert all(status == "ready" for status in rows["360p"].values()), rows
    dead_celery.close()


@dataclass
class Failover:
    settings: Settings
    celery: Celery
    workers: dict[int, subprocess.Popen[bytes]]  # by pid, the one in the worker's node name


@pytest.fixture
def failover(settings: Settings) -> Iterator[Failover]:
    """A stack of its own (database, Redis): two live-only `nebula-live worker` processes
    of one pool process each, and a `nebula-live ingest` whose ladder sweep re-sends work
    and writes gaps. The deadline (3 s) comes before the lease of a dead worker lapses
    (4 s), so its rung is always listed as a gap before anyone redoes it."""
    with fresh_database() as url, redis_server() as redis_url:
        upgrade(url)
        own = settings.model_copy(
            update={
                "database_url": url,
                "redis_url": redis_url,
                "live_workers": 1,
                "rtmp_port": free_port(),
                "srt_port": free_port(),
                "rung_deadline_targets": 1.5,
                "ladder_lease_seconds": 4.0,
            }
        )
        env = settings_env(own)
        logs = ARTIFACTS / "logs"
        app = make_celery(own.redis_url)
        with (
            nebula_process("ingest", env, logs / "failover-ingest.log"),
            nebula_process("worker", env, logs / "failover-a.log", "--pool", "live") as a,
            nebula_process("worker", env, logs / "failover-b.log", "--pool", "live") as b,
        ):
            wait_for(lambda: len(app.control.ping(timeout=1)) == 2, 120, "two live workers")
            wait_for(lambda: tcp_open(own.rtmp_port), 120, "the ingest")
            yield Failover(own, app, {a.pid: a, b.pid: b})
        app.close()


def test_a_killed_worker_host_s_rung_is_listed_as_a_gap_and_redone_by_another_worker(
    failover: Failover, store: ObjectStore, segments_480p, record_property
) -> None:
    own = failover.settings
    _, session_id = store_session(own, store, segments_480p)
    # Only the first is sent now; the others wait in the outbox, for the sweep to send.
    send_ladder(own, failover.celery, session_id, segments_480p[:1])

    def holder() -> str | None:
        jobs = [job for job in outbox(own, session_id) if job.sequence == 0]
        return jobs[0].lease_worker if jobs else "done"

    wait_for(lambda: holder() is not None, 60, "a worker running segment 0")
    victim = holder()
    pid = int(victim.split("@")[0].removeprefix("live-"))
    os.killpg(pid, signal.SIGKILL)  # the whole host: its worker process and its pool
    killed = time.monotonic()
    failover.workers[pid].wait(10)
    assert holder() == victim, "segment 0 was done before its worker was killed"

    # The deadline passes: the rung lists segment 0 as a gap and moves on past it.
    def listed() -> list[m3u8.Segment]:
        return playlist(own, session_id, "360p").segments

    wait_for(lambda: len(listed()) == len(segments_480p), 60, "the rung past segment 0")
    assert listed()[0].gap_tag
    # Its lease lapses: the sweep sends it again, and the other worker (the only one left)
    # redoes it: seen holding the lease, or done already if that was quicker than a poll.
    wait_for(lambda: holder() not in (None, victim), 30, "another worker taking segment 0")
    rescuer = holder()
    redone_after = time.monotonic() - killed
    record_property("kill_to_redo_seconds", round(redone_after, 2))
    print(f"segment 0: worker {victim} killed; {rescuer} {redone_after:.1f} s later")

    wait_for(lambda: outbox(own, session_id) == [], 60, "the outbox emptied")
    rows = rung_rows(own, session_id)
    assert all(status == "ready" for status in rows["360p"].values()), rows
    with session_scope(own.database_url) as db:
        late = db.scalars(
            select(Segment.missed_deadline)
            .join(Rendition)
            .where(Rendition.session_id == session_id, Rendition.name == "360p")
            .order_by(Segment.sequence)
        ).first()
    assert late is True
    # The late result: still a gap in the live playlist (players may have skipped it), in
    # the recording once the session is over.
    assert listed()[0].gap_tag
    end_session(own, session_id)
    with session_scope(own.database_url) as db:
        session = db.get(LiveSession, session_id)
        rendition = catalog.find_rendition(db, session_id, "360p")
        policy = PlaylistPolicy(own.segment_seconds, own.playlist_window)
        recording = m3u8.loads(catalog.render_recording(db, session, rendition, policy))
    assert recording.is_endlist
    assert [s.gap_tag for s in recording.segments] == [None] * len(segments_480p)


UPLOAD_TASKS = 300


def test_a_live_segment_s_rungs_are_made_while_an_upload_s_hundreds_of_tasks_wait(
    settings: Settings, store: ObjectStore, celery, celery_worker, segments_480p
) -> None:
    # An upload's ladder: hundreds of tasks on nebula.uploads, queued first (one stored
    # source object behind all of its segment rows).
    _, upload_session = new_session(settings, upload=True)
    rendition_id = source_rendition(settings, upload_session, segments_480p[0])
    init_key = media_key(None, SOURCE, upload_session, init_name(0))
    key = media_key(None, SOURCE, upload_session, segment_name(0))
    store.put_bytes(init_key, segments_480p[0].init.data, "video/mp4")
    store.put_bytes(key, segments_480p[0].data, "video/iso.segment")
    for sequence in range(UPLOAD_TASKS):
        segment = dataclasses.replace(segments_480p[0], sequence=sequence)
        record_source_segment(
            settings,
            upload_session,
            rendition_id,
            segment,
            key,
            init_key,
            UPLOAD_QUEUE,
            plan=sequence == 0,
        )
        ladder_outbox.relay(celery, settings.database_url, upload_session, sequence, UPLOAD_QUEUE)
    broker = Redis.from_url(settings.redis_url)
    try:
        # Then a live segment: its task goes to nebula.live, which processes of their own
        # consume, so it does not wait for the upload's tasks to drain.
        _, live_session = store_session(settings, store, segments_480p[:1])
        send_ladder(settings, celery, live_session, segments_480p[:1])
        wait_for_rungs(settings, live_session, {"360p"}, 1)
        still_queued = broker.llen(UPLOAD_QUEUE)
        made = len(rung_rows(settings, upload_session).get("360p", {}))
        assert still_queued >= UPLOAD_TASKS // 2, (still_queued, made)
        assert made < UPLOAD_TASKS // 2, made
    finally:
        # The rest of the upload goes: its tasks find no work left and return at once.
        with session_scope(settings.database_url) as db:
            db.delete(db.get(LiveSession, upload_session))
        broker.delete(UPLOAD_QUEUE)
