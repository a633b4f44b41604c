"""The upload job and its bookkeeping against real PostgreSQL, Redis, S3 and a worker: a file
the job cannot read, or whose media the packager cannot place, ends `failed` with the reason
(webhook sent, original deleted); concurrent workers finishing the last rungs mark an upload
ready exactly once, its progress only ever growing; retention deletes an old upload's media
and rows. A transcoded upload is split into chunks that the worker's processes share, and
the chunks join into one seamless source rendition. A video extent far past the declared
duration is refused before any chunk is planned; a job started more than
NEBULA_UPLOAD_MAX_DELIVERIES times, and an upload stuck in processing, are failed."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest
import redis
from sqlalchemy import select

from core.db import session_scope
from core.events import upload_channel
from core.models import LiveSession, Rendition, Segment, Upload
from core.settings import Settings
from core.storage import ObjectNotFoundError, ObjectStore
from media.ladder import SOURCE
from media.types import AudioConfig
from packager import ladder_rows
from packager.celery_app import make_celery
from packager.enqueue import UPLOAD_CHUNK_TASK, UPLOAD_TASK, enqueue_upload
from packager.keys import init_name, media_key, segment_name
from packager.ladder_rows import RungOutcome
from packager.tasks.housekeeping import STUCK_UPLOADS_TASK, expire_recordings
from packager.tasks.upload_chunks import chunk_audio_key, count_start, snap_audio
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_source import SourceOptions, UploadSource
from packager.uploads import (
    advance_upload,
    expect_chunks,
    upload_object_key,
    upload_prefix,
)
from tests.media import decode, make_media_file
from tests.services import WebhookReceiver, wait_for

SEGMENTS = 6
QUIET_SECONDS = 2.0
LADDER = [
    {"name": "240p", "height": 240, "bitrate": 400_000},
    {"name": "180p", "height": 180, "bitrate": 250_000},
]


# A transcoded upload split in chunks of two 2 s segments: 9 s make three chunks.
CHUNKED_SECONDS = 9
CHUNK_SECONDS = 4.0
CHUNK_COUNT = 3
FRAME_SECONDS = 1 / 30
MPEG4_MP3 = ["-c:v", "mpeg4", "-g", "90", "-q:v", "5", "-c:a", "libmp3lame"]


@pytest.fixture
def upload_events(settings: Settings) -> Iterator[redis.client.PubSub]:
    pubsub = redis.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    yield pubsub
    pubsub.close()


def _messages(pubsub: redis.client.PubSub, until_status: bool, timeout: float = 30) -> list[dict]:
    """What the channel carried: until a final `status` arrives, or until it is quiet for
    QUIET_SECONDS (the subscribe confirmation also comes out as None: keep reading)."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None:
            if not until_status and time.monotonic() - last > QUIET_SECONDS:
                break
            continue
        last = time.monotonic()
        messages.append(json.loads(message["data"]))
        if until_status and messages[-1]["type"] == "status":
            break
    return messages


def _accepted(
    settings: Settings,
    store: ObjectStore,
    data: bytes,
    *,
    ladder: list | None = None,
    seconds: float = SEGMENTS * 2.0,
) -> tuple[uuid.UUID, uuid.UUID]:
    """An upload as the API leaves it once accepted: the file stored, both rows written."""
    upload_id = uuid.uuid4()
    key = upload_object_key(upload_id)
    store.put_bytes(key, data, "application/octet-stream")
    with session_scope(settings.database_url) as db:
        session = LiveSession(stream_id=None, protocol="upload", status="live", ladder=ladder)
        db.add(session)
        db.flush()
        db.add(
            Upload(
                id=upload_id,
                name="job test",
                filename="clip.mp4",
                object_key=key,
                size_bytes=len(data),
                session_id=session.id,
                duration_seconds=seconds,
            )
        )
        return upload_id, session.id


@dataclass
class Jobs:
    """Upload jobs the test worker runs: accept a file as the API would (and follow its
    channel), then check how the upload ended."""

    settings: Settings
    store: ObjectStore
    events: redis.client.PubSub
    webhooks: WebhookReceiver

    def accept(self, data: bytes, seconds: float) -> tuple[uuid.UUID, uuid.UUID]:
        upload_id, session_id = _accepted(self.settings, self.store, data, seconds=seconds)
        self.events.subscribe(upload_channel(str(upload_id)))
        return upload_id, session_id

    def send(self, upload_id: uuid.UUID, **options: Any) -> str:
        """The job's message, as the broker delivers it; what the job returned."""
        celery = make_celery(self.settings.redis_url)
        return celery.send_task(UPLOAD_TASK, args=[str(upload_id)], **options).get(timeout=120)

    def assert_failed(self, upload_id: uuid.UUID, session_id: uuid.UUID, reason: str) -> str:
        """The upload ended failed with a reason starting with `reason`: its last `status`
        event, its rows and its upload.failed webhook say so, and its original is gone.
        Returns the whole reason."""
        messages = _messages(self.events, until_status=True)
        status = [m for m in messages if m["type"] == "status"][-1]
        assert status["status"] == "failed"
        assert status["error"].startswith(reason), status["error"]
        with session_scope(self.settings.database_url) as db:
            upload = db.get(Upload, upload_id)
            session = db.get(LiveSession, session_id)
            assert (upload.status, upload.error, upload.finished_at is not None) == (
                "failed",
                status["error"],
                True,
            )
            assert (session.status, session.error) == ("failed", status["error"])
        with pytest.raises(ObjectNotFoundError):
            self.store.size_of(upload_object_key(upload_id))  # the original is gone too
        wait_for(lambda: self.webhooks.containing(str(upload_id)), 30, "upload.failed webhook")
        [hook] = [json.loads(d.body) for d in self.webhooks.containing(str(upload_id))]
        assert hook["type"] == "upload.failed"
        assert hook["data"]["error"] == status["error"]
        return status["error"]


@pytest.fixture
def jobs(
    settings: Settings,
    store: ObjectStore,
    celery_worker,
    upload_events: redis.client.PubSub,
    webhook_receiver: WebhookReceiver,
) -> Jobs:
    return Jobs(settings, store, upload_events, webhook_receiver)


def test_a_file_the_job_cannot_read_fails_the_upload_with_the_reason(jobs: Jobs) -> None:
    # The probe would refuse this; here it stands for a file that changed after acceptance.
    upload_id, session_id = jobs.accept(b"\x00\x00\x00\x18ftypmp42 broken", SEGMENTS * 2.0)
    enqueue_upload(make_celery(jobs.settings.redis_url), upload_id)
    jobs.assert_failed(upload_id, session_id, "the file cannot be processed: ")


def _video_going_back(flv: bytes, after_ms: int, back_ms: int) -> bytes:
    """The FLV with every video tag from `after_ms` on dated `back_ms` earlier: its decode
    times go backwards once, which the segmenter refuses (SegmenterError)."""
    data = bytearray(flv)
    offset = int.from_bytes(data[5:9], "big") + 4
    while offset + 11 <= len(data):
        size = int.from_bytes(data[offset + 1 : offset + 4], "big")
        ms = int.from_bytes(data[offset + 4 : offset + 7], "big") | data[offset + 7] << 24
        if data[offset] == 9 and ms >= after_ms:
            ms -= back_ms
            data[offset + 4 : offset + 7] = (ms & 0xFFFFFF).to_bytes(3, "big")
            data[offset + 7] = ms >> 24
        offset += 11 + size + 4
    return bytes(data)


def test_media_the_packager_cannot_place_fails_the_upload_instead_of_leaving_it_processing(
    jobs: Jobs, tmp_path: Path
) -> None:
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-c:a", "aac"]
    flv = make_media_file(tmp_path / "back.flv", *h264, seconds=6, size="320x240")
    upload_id, session_id = jobs.accept(_video_going_back(flv.read_bytes(), 4000, 3000), 6)
    assert jobs.send(upload_id) == "failed"
    jobs.assert_failed(
        upload_id, session_id, "the file cannot be processed: video dts went backwards from "
    )


def test_a_job_whose_workers_keep_dying_on_it_is_failed_once_past_the_delivery_limit(
    jobs: Jobs, tmp_path: Path
) -> None:
    # A file the job would package: only the count of its message's starts stops it.
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    path = make_media_file(tmp_path / "fine.mp4", *h264, seconds=2, size="160x120")
    upload_id, session_id = jobs.accept(path.read_bytes(), 2)
    task_id = str(uuid.uuid4())
    limit = jobs.settings.upload_max_deliveries
    for _ in range(limit):  # as the starts whose worker died did
        count_start(redis.Redis.from_url(jobs.settings.redis_url), task_id, 0)

    # The broker delivers the same message again (same id, no retry counted).
    assert jobs.send(upload_id, task_id=task_id) == "failed"
    jobs.assert_failed(
        upload_id,
        session_id,
        f"the upload's job was started {limit + 1} times and its worker was lost each time "
        f"before it finished (out of memory or crashed; at most {limit}, "
        "NEBULA_UPLOAD_MAX_DELIVERIES)",
    )


def test_a_chunk_whose_worker_is_killed_every_time_fails_the_upload_after_the_limit(
    jobs: Jobs, tmp_path: Path
) -> None:
    """Real deaths: each start of the chunk's message is SIGKILLed in its pool process, and
    Celery (acks_late, reject_on_worker_lost) delivers it again, until the starts pass the
    limit and the next one fails the upload instead of trying once more."""
    mpeg4 = ["-c:v", "mpeg4", "-q:v", "5"]
    path = make_media_file(tmp_path / "long.mkv", *mpeg4, seconds=60, size="640x480", audio=False)
    upload_id, session_id = jobs.accept(path.read_bytes(), 60)
    expect_chunks(jobs.settings.database_url, upload_id, 1)
    celery = make_celery(jobs.settings.redis_url)
    task_id = str(uuid.uuid4())
    # One chunk of the whole minute: 30 segments of 2 s, long enough to be caught running.
    numbers = [0, 30 * 2 * 90_000, 30, 1]
    chunk = celery.send_task(UPLOAD_CHUNK_TASK, args=[str(upload_id), 0, numbers], task_id=task_id)
    killed: list[int] = []

    def running_in_a_new_process() -> bool:
        for tasks in (celery.control.inspect(timeout=1).active() or {}).values():
            for task in tasks:
                if task["id"] == task_id and task["worker_pid"] not in killed:
                    killed.append(task["worker_pid"])
                    return True
        return False

    limit = jobs.settings.upload_max_deliveries
    for _ in range(limit):
        wait_for(running_in_a_new_process, 60, "the chunk running in a new process")
        os.kill(killed[-1], signal.SIGKILL)
    assert chunk.get(timeout=60) == "failed"
    jobs.assert_failed(
        upload_id,
        session_id,
        f"chunk 0 was started {limit + 1} times and its worker was lost each time",
    )
    assert len(set(killed)) == limit


def test_starts_are_counted_per_message_and_expire(settings: Settings) -> None:
    events = redis.Redis.from_url(settings.redis_url)
    task_id = str(uuid.uuid4())
    assert [count_start(events, task_id, 0) for _ in range(3)] == [1, 2, 3]
    assert count_start(events, task_id, 1) == 1  # a retry is a message of its own
    assert 0 < events.ttl(f"nebula:task-starts:{task_id}:0") <= 7 * 24 * 3600


def test_an_upload_stuck_in_processing_is_failed_by_the_sweep(jobs: Jobs) -> None:
    stuck, stuck_session = jobs.accept(b"a job that was lost", 12)
    recent, _ = _accepted(jobs.settings, jobs.store, b"a job still running")
    with session_scope(jobs.settings.database_url) as db:
        db.get(Upload, stuck).created_at = datetime.now(UTC) - timedelta(days=3)

    swept = make_celery(jobs.settings.redis_url).send_task(STUCK_UPLOADS_TASK).get(timeout=60)
    assert swept >= 1  # the other tests' uploads are all younger than two days
    jobs.assert_failed(
        stuck,
        stuck_session,
        "still processing 172800 s after it was accepted (NEBULA_UPLOAD_STUCK_SECONDS): its "
        "job was lost",
    )
    with session_scope(jobs.settings.database_url) as db:
        assert db.get(Upload, recent).status == "processing"
    assert jobs.store.size_of(upload_object_key(recent)) > 0


def test_a_redelivered_job_of_an_upload_already_ended_deletes_the_file_left_behind(
    jobs: Jobs,
) -> None:
    # As if the worker had been lost between recording the upload's end and the delete.
    upload_id, _ = jobs.accept(b"left behind", 12)
    with session_scope(jobs.settings.database_url) as db:
        db.get(Upload, upload_id).status = "ready"
    assert jobs.send(upload_id) == "gone"
    assert list(jobs.store.list_keys(upload_prefix(upload_id))) == []


def _source_rows(settings: Settings, session_id: uuid.UUID) -> None:
    """What the job records for a 640x360 source of SEGMENTS two-second segments, and the
    ladder plan its first segment makes."""
    with session_scope(settings.database_url) as db:
        rendition = Rendition(
            session_id=session_id, name=SOURCE, codecs="avc1.64001e", width=640, height=360
        )
        db.add(rendition)
        db.flush()
        policy = ladder_rows.VariantPolicy.from_settings(settings)
        ladder_rows.plan_ladder(db, db.get(LiveSession, session_id), rendition, policy)
        for sequence in range(SEGMENTS):
            db.add(
                Segment(
                    rendition_id=rendition.id,
                    sequence=sequence,
                    duration=2.0,
                    object_key=media_key(None, SOURCE, session_id, segment_name(sequence)),
                    init_key=media_key(None, SOURCE, session_id, init_name(0)),
                )
            )


def test_concurrent_workers_mark_an_upload_ready_exactly_once_and_progress_only_grows(
    settings: Settings,
    store: ObjectStore,
    celery_worker,
    webhook_receiver: WebhookReceiver,
    upload_events: redis.client.PubSub,
) -> None:
    upload_id, session_id = _accepted(settings, store, b"unused", ladder=LADDER)
    _source_rows(settings, session_id)
    celery = make_celery(settings.redis_url)
    events = redis.Redis.from_url(settings.redis_url)
    upload_events.subscribe(upload_channel(str(upload_id)))

    def rung_task(work: tuple[str, int]) -> None:
        """What a ladder task does for an upload's segment: its rows, then advance."""
        name, sequence = work
        with session_scope(settings.database_url) as db:
            source = ladder_rows.load_source_segment(db, session_id, sequence)
            [rung] = [r for r in source.rungs if r.name == name]
            ladder_rows.record_rung_segment(
                db,
                source,
                RungOutcome(rung, "avc1.64000d", 1000),
                ladder_rows.VariantPolicy.from_settings(settings),
            )
        advance_upload(settings, events, celery, session_id)

    def job_done() -> None:
        advance_upload(settings, events, celery, session_id, source_segments=SEGMENTS)

    work = [(rung["name"], sequence) for rung in LADDER for sequence in range(SEGMENTS)]
    random.Random(7).shuffle(work)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(rung_task, item) for item in work[:6]]
        futures.append(pool.submit(job_done))
        futures += [pool.submit(rung_task, item) for item in work[6:]]
        for future in futures:
            future.result(timeout=60)

    messages = _messages(upload_events, until_status=False)
    statuses = [m for m in messages if m["type"] == "status"]
    assert [m["status"] for m in statuses] == ["ready"]
    assert messages[-1] is statuses[0]
    progress = [m["progress"] for m in messages]
    assert progress == sorted(set(progress)), progress  # strictly growing, in order
    assert progress[-1] == 1.0 and progress[-2] < 1.0
    with session_scope(settings.database_url) as db:
        upload = db.get(Upload, upload_id)
        assert (upload.status, upload.progress, upload.source_segments) == ("ready", 1.0, 6)
        assert db.get(LiveSession, session_id).status == "ended"
        names = db.scalars(select(Rendition.name).where(Rendition.session_id == session_id))
        assert sorted(names) == ["180p", "240p", SOURCE]
    wait_for(lambda: webhook_receiver.containing(str(upload_id)), 30, "upload.ready webhook")
    [hook] = [json.loads(d.body) for d in webhook_receiver.containing(str(upload_id))]
    assert hook["type"] == "upload.ready"


def test_retention_deletes_an_old_upload_with_its_media(
    settings: Settings, store: ObjectStore
) -> None:
    upload_id, session_id = _accepted(settings, store, b"unused")
    store.delete(upload_object_key(upload_id))  # the job deletes it once packaged
    _source_rows(settings, session_id)
    keys = [media_key(None, SOURCE, session_id, init_name(0))]
    keys += [media_key(None, SOURCE, session_id, segment_name(n)) for n in range(SEGMENTS)]
    for key in keys:
        store.put_bytes(key, b"media", "video/mp4")
    assert all(key.startswith(f"hls/uploads/source/{session_id}/") for key in keys)
    ended = datetime.now(UTC) - timedelta(days=3651)
    with session_scope(settings.database_url) as db:
        session = db.get(LiveSession, session_id)
        session.status, session.ended_at = "ended", ended
        db.get(Upload, upload_id).status = "ready"

    # Only what ended over ten years ago: the other tests' sessions stay.
    assert expire_recordings(settings.database_url, store, timedelta(days=3650)) == 1
    assert list(store.list_keys(f"hls/uploads/source/{session_id}/")) == []
    with session_scope(settings.database_url) as db:
        assert db.get(LiveSession, session_id) is None
        assert db.get(Upload, upload_id) is None


HOLDER_LOCK_SECONDS = 2.0


def test_a_second_delivery_of_a_running_job_is_turned_away(jobs: Jobs) -> None:
    upload_id, _ = jobs.accept(b"not media at all", 12)
    key = f"nebula:upload-job:{upload_id}"
    running = redis.Redis.from_url(jobs.settings.redis_url).lock(
        key, HOLDER_LOCK_SECONDS, thread_local=False
    )
    assert running.acquire(blocking=False)  # as the first delivery holds it while it works
    stop = threading.Event()

    def renew() -> None:  # as it does at every segment
        while not stop.wait(HOLDER_LOCK_SECONDS / 4):
            running.reacquire()

    renewer = threading.Thread(target=renew)
    renewer.start()
    try:
        assert jobs.send(upload_id) == "running elsewhere"
        with session_scope(jobs.settings.database_url) as db:
            assert db.get(Upload, upload_id).status == "processing"
    finally:
        stop.set()
        renewer.join()
        running.release()
    # The delivery that holds the lock carries on: here, to the failure this file earns.
    assert jobs.send(upload_id) == "failed"


def test_a_job_whose_delivery_finishes_while_a_copy_waits_is_not_run_again(jobs: Jobs) -> None:
    upload_id, _ = jobs.accept(b"not media at all", 12)
    key = f"nebula:upload-job:{upload_id}"
    running = redis.Redis.from_url(jobs.settings.redis_url).lock(key, 60, thread_local=False)
    assert running.acquire(blocking=False)
    finishing = threading.Timer(1.0, running.release)  # long before the lock would run out
    finishing.start()
    try:
        assert jobs.send(upload_id) == "running elsewhere"
    finally:
        finishing.join()
    with session_scope(jobs.settings.database_url) as db:
        assert db.get(Upload, upload_id).status == "processing"


def test_the_requeued_job_of_a_dead_worker_runs_once_the_dead_delivery_s_lock_runs_out(
    jobs: Jobs,
) -> None:
    """Celery requeues the message of a pool process that died at once, while the lock the
    dead delivery took is still held (it renews it no more): the job must not be dropped."""
    upload_id, session_id = jobs.accept(b"not media at all", 12)
    key = f"nebula:upload-job:{upload_id}"
    dead = redis.Redis.from_url(jobs.settings.redis_url).lock(
        key, HOLDER_LOCK_SECONDS, thread_local=False
    )
    assert dead.acquire(blocking=False)
    assert jobs.send(upload_id) == "failed"  # it ran: the failure this file earns
    jobs.assert_failed(upload_id, session_id, "the file cannot be processed: ")


@pytest.fixture(scope="module")
def chunked_upload(
    settings: Settings, store: ObjectStore, celery_worker, tmp_path_factory
) -> tuple[uuid.UUID, uuid.UUID, Path]:
    """A 320x240 MPEG-4 part 2 / MP3 file (video and audio both encoded; a source keyframe
    every 3 s, so chunks seek back and decode frames they drop), processed to the end."""
    folder = tmp_path_factory.mktemp("chunked")
    path = make_media_file(
        folder / "chunked.mkv", *MPEG4_MP3, seconds=CHUNKED_SECONDS, size="320x240"
    )
    upload_id, session_id = _accepted(
        settings, store, path.read_bytes(), ladder=[LADDER[1]], seconds=CHUNKED_SECONDS
    )
    celery = make_celery(settings.redis_url)
    planned = celery.send_task(UPLOAD_TASK, args=[str(upload_id)], kwargs={"chunk_seconds": 4})
    assert planned.get(timeout=60) == f"split into {CHUNK_COUNT} chunks"

    def finished() -> bool:
        with session_scope(settings.database_url) as db:
            return db.get(Upload, upload_id).status != "processing"

    wait_for(finished, 180, "the chunked upload")
    return upload_id, session_id, folder


def _source_segments(settings: Settings, session_id: uuid.UUID) -> list[Segment]:
    with session_scope(settings.database_url) as db:
        segments = db.scalars(
            select(Segment)
            .join(Rendition)
            .where(Rendition.session_id == session_id, Rendition.name == SOURCE)
            .order_by(Segment.sequence)
        ).all()
        db.expunge_all()
        return list(segments)


def test_a_transcoded_upload_is_packaged_in_chunks_that_join_into_one_seamless_source(
    settings: Settings, store: ObjectStore, chunked_upload: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    upload_id, session_id, folder = chunked_upload
    with session_scope(settings.database_url) as db:
        upload = db.get(Upload, upload_id)
        assert (upload.status, upload.error, upload.progress) == ("ready", None, 1.0)
        assert upload.chunk_count == CHUNK_COUNT
        assert sorted(upload.chunks) == ["0", "1", "2"]
    segments = _source_segments(settings, session_id)
    assert upload.source_segments == len(segments) == 5
    assert [s.sequence for s in segments] == list(range(5))
    # Two segments per chunk: chunk 1 starts at segment 2, chunk 2 at segment 4.
    assert [upload.chunks[str(i)]["segments"] for i in range(CHUNK_COUNT)] == [2, 2, 1]
    assert [s.duration for s in segments[:4]] == pytest.approx([2.0] * 4, abs=1e-6)
    assert abs(sum(s.duration for s in segments) - CHUNKED_SECONDS) <= FRAME_SECONDS
    assert {s.init_key for s in segments} == {segments[0].init_key}  # one init for all chunks
    # The file and the chunks' shared audio were deleted once the last chunk was in.
    assert list(store.list_keys(upload_prefix(upload_id))) == []

    # The source rendition as a player gets it: its init, then every segment in order.
    recording = folder / "source.mp4"
    recording.write_bytes(
        store.get_bytes(segments[0].init_key)
        + b"".join(store.get_bytes(s.object_key) for s in segments)
    )
    errors, seconds = decode(str(recording))
    assert errors == ""
    assert abs(seconds - CHUNKED_SECONDS) <= 0.1

    # Audio: every AAC frame (1024 samples) starts where the one before ends, across both
    # seams (4 s, 8 s); the samples last as long as the video, within an AAC frame each end.
    rate = 48000
    starts = [int(p["pts"]) for p in _audio_packets(recording)]
    assert {b - a for a, b in itertools.pairwise(starts)} == {1024}
    audio_seconds = (starts[-1] + 1024 - starts[0]) / rate
    assert abs(audio_seconds - sum(s.duration for s in segments)) <= 2 * 1024 / rate
    for seam in (4.0, 8.0):
        assert any(abs(start / rate - seam) < 1024 / rate for start in starts)


def _audio_packets(path: Path) -> list[dict]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_packets", "-of", "json"]
        + [str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)["packets"]


def test_the_chunks_of_an_upload_run_as_separate_tasks_on_more_than_one_worker_process(
    settings: Settings, chunked_upload: tuple[uuid.UUID, uuid.UUID, Path]
) -> None:
    upload_id, _, _ = chunked_upload
    with session_scope(settings.database_url) as db:
        chunks = db.get(Upload, upload_id).chunks
    workers = {chunk["worker"] for chunk in chunks.values()}
    # The test worker runs two processes: each chunk says which one (host:pid) made it.
    assert len(workers) == 2, chunks


def test_a_chunk_that_cannot_be_processed_fails_the_upload_with_the_reason(
    settings: Settings, store: ObjectStore, celery_worker, upload_events: redis.client.PubSub
) -> None:
    # As if the file had changed between the planner and this chunk.
    upload_id, session_id = _accepted(settings, store, b"not media at all")
    store.put_bytes(chunk_audio_key(upload_id, 1), b"", "application/octet-stream")
    expect_chunks(settings.database_url, upload_id, 2)
    upload_events.subscribe(upload_channel(str(upload_id)))
    chunk = make_celery(settings.redis_url).send_task(
        UPLOAD_CHUNK_TASK, args=[str(upload_id), 1, [0, 360_000, 2, 2]]
    )
    assert chunk.get(timeout=60) == "failed"
    [status] = _messages(upload_events, until_status=True)
    assert status["status"] == "failed"
    assert status["error"].startswith("chunk 1 cannot be processed: ")
    with session_scope(settings.database_url) as db:
        assert db.get(Upload, upload_id).error == status["error"]
        assert db.get(LiveSession, session_id).status == "failed"
    assert list(store.list_keys(upload_prefix(upload_id))) == []  # file and audio deleted


def test_a_far_off_timestamp_is_refused_before_any_chunk_is_planned(
    jobs: Jobs, tmp_path: Path
) -> None:
    # 3 s of MPEG-4 part 2 (encoded, so planned in chunks) whose last frame is dated an hour
    # later (Matroska counts milliseconds): 900 chunks of 4 s without the check. The upload
    # says 3 s, as a header may that the far-off packet does not change.
    late = ["-bsf:v", "setts=ts=if(eq(N\\,89)\\,TS+3600000\\,TS)"]
    mpeg4 = ["-c:v", "mpeg4", "-bf", "0", *late, "-c:a", "libmp3lame"]
    path = make_media_file(tmp_path / "far.mkv", *mpeg4, seconds=3, size="160x120")
    upload_id, session_id = jobs.accept(path.read_bytes(), 3)
    assert jobs.send(upload_id, kwargs={"chunk_seconds": 4}) == "failed"

    reason = jobs.assert_failed(upload_id, session_id, "the video's timestamps span 3603.")
    assert "far beyond the 3.0 s the file declares (at most 66.0 s)" in reason
    with session_scope(jobs.settings.database_url) as db:
        assert db.get(Upload, upload_id).chunk_count is None  # nothing was planned
    assert list(jobs.store.list_keys(upload_prefix(upload_id))) == []


# Three minutes of a small MPEG-4 picture (encoded, so planned in chunks) and MP3 audio
# (re-encoded to AAC by the planner's scan, spooled to a file as it goes), in the default
# 20 s chunks.
LONG_SECONDS = 180
LONG_CODECS = ["-c:v", "mpeg4", "-q:v", "10", "-c:a", "libmp3lame", "-b:a", "128k"]


@pytest.mark.timeout(600)
def test_a_long_upload_s_spooled_audio_reaches_the_source_frame_for_frame(
    settings: Settings, store: ObjectStore, celery_worker, tmp_path: Path
) -> None:
    path = make_media_file(
        tmp_path / "long.mkv", *LONG_CODECS, seconds=LONG_SECONDS, size="64x64", rate=5
    )
    upload_id, session_id = _accepted(
        settings, store, path.read_bytes(), ladder=[], seconds=LONG_SECONDS
    )
    planned = make_celery(settings.redis_url).send_task(UPLOAD_TASK, args=[str(upload_id)])
    assert planned.get(timeout=300) == "split into 9 chunks"

    def finished() -> bool:
        with session_scope(settings.database_url) as db:
            return db.get(Upload, upload_id).status != "processing"

    wait_for(finished, 400, "the long upload")
    with session_scope(settings.database_url) as db:
        assert db.get(Upload, upload_id).status == "ready"
    segments = _source_segments(settings, session_id)
    recording = tmp_path / "source.mp4"
    recording.write_bytes(
        store.get_bytes(segments[0].init_key)
        + b"".join(store.get_bytes(s.object_key) for s in segments)
    )

    # What the file's audio is as one pass encodes it, in this process, on one grid.
    with av.open(str(path)) as container:
        source = UploadSource(container, SourceOptions(settings.segment_seconds, EncoderOptions()))
        units: list = []
        source.scan(units.append)
        [config] = [c for c in source.configs if isinstance(c, AudioConfig)]
    frames = [u.data for u in snap_audio(units, config.sample_rate, config.frame_samples)]
    starts = [int(p["pts"]) for p in _audio_packets(recording)]
    with av.open(str(recording)) as played:
        packaged = [bytes(p) for p in played.demux(played.streams.audio[0]) if p.size]
    # Every AAC frame follows the one before across all eight seams, and they are the
    # file's frames, byte for byte and in order, from where its video starts to its end.
    assert {b - a for a, b in itertools.pairwise(starts)} == {config.frame_samples}
    first = frames.index(packaged[0])
    assert frames[first : first + len(packaged)] == packaged
    assert len(frames) - len(packaged) <= 2 * config.sample_rate // config.frame_samples
