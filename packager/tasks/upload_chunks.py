"""A transcoded upload's source rendition, encoded in chunks that separate workers share.

Encoding the full-resolution video is what takes time in an upload whose video is not
H.264, so the upload job (`packager.tasks.upload`) becomes a planner: it reads the file once
without decoding video (its extent, and all of its audio, copied or encoded to AAC in one
pass so the audio has no seams), stores each chunk's audio as one object, and queues one
task per chunk.

A chunk is a whole number of segments on the segment grid of the source's video clock:
chunk `i` encodes the frames whose presentation times are in [origin + i * length,
origin + (i + 1) * length), with the keyframes forced where the single job forces them
(x264 with the same settings gives the same SPS/PPS, so every chunk shares init 0), and
packages them with a `SegmentPackager` that starts at the chunk's first segment number and
timeline position; the next chunk's first frame closes its last segment, so durations tile
the timeline exactly. The audio units sit on one 1024-sample grid for the whole file, the
grid the packager puts every segment's audio on, so a chunk's audio continues its
neighbour's sample for sample.
"""

from __future__ import annotations

import heapq
import io
import itertools
import logging
import os
import socket
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import av
from redis import Redis
from sqlalchemy import delete, select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, Upload
from core.settings import Settings, get_settings
from core.storage import ObjectNotFoundError, ObjectStore
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.ladder import SOURCE
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind
from packager.celery_app import celery_app
from packager.enqueue import UPLOAD_CHUNK_TASK
from packager.source_writer import SourceWriter
from packager.tasks.base import MediaTask, worker_services
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_probe import open_upload
from packager.transcoding.upload_source import SourceOptions, UploadSource
from packager.uploads import (
    PROBE_INFO_KEY,
    ChunkReport,
    advance_upload,
    chunk_done,
    fail_upload,
    record_chunk,
    upload_prefix,
)

log = logging.getLogger(__name__)

# A chunk's audio object reaches this far past both of its ends (more than any video frame
# lasts): the packager drops what falls before the chunk's first keyframe, and the chunk
# stops at the next chunk's first frame, so no unit near a seam is missed or doubled.
AUDIO_MARGIN_TICKS = CLOCK_HZ
# How far the video's timestamps may run past the duration the file declares: twice it, and
# a minute more (a container's duration is a header field, not always exact).
EXTENT_OVER_DECLARED = 2.0
EXTENT_SLACK_SECONDS = 60.0
# How long the starts of a task's message are counted: longer than any redelivery cycle.
START_COUNT_SECONDS = 7 * 24 * 3600
_UNIT_HEADER = struct.Struct(">qI")  # dts in 90 kHz ticks, payload length


@dataclass(frozen=True, slots=True)
class UploadJob:
    """What the planner and its chunks need to know of an upload, from its rows."""

    upload_id: uuid.UUID
    session_id: uuid.UUID
    object_key: str
    size_bytes: int
    frame_rate: float | None
    declared_seconds: float | None
    started_at: datetime

    @classmethod
    def from_rows(cls, upload: Upload, session: LiveSession) -> UploadJob:
        probed = (session.media_info or {}).get(PROBE_INFO_KEY) or {}
        return cls(
            upload.id,
            session.id,
            upload.object_key,
            upload.size_bytes,
            (probed.get("video") or {}).get("frame_rate"),
            upload.duration_seconds,
            session.started_at,
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The SPS may not say the frame rate; the container did."""
        return {"framerate": self.frame_rate} if self.frame_rate else {}

    def source_writer(self, settings: Settings, store: ObjectStore) -> SourceWriter:
        _, redis = worker_services()
        writer = SourceWriter(
            settings,
            store,
            redis,
            celery_app,
            stream_id=None,
            session_id=self.session_id,
            timeline_start=0,
            transcode=True,
        )
        # Every chunk's writer dates its segments from the same origin.
        writer.wall_clock_origin = self.started_at
        return writer


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Chunks of `chunk_ticks` from `origin` (the first video presentation time, source
    clock), `segments` segments each; the last one runs to the end of the file."""

    origin: int
    chunk_ticks: int
    segments: int
    count: int

    def start(self, index: int) -> int:
        return self.origin + index * self.chunk_ticks

    def end(self, index: int) -> int | None:
        return None if index == self.count - 1 else self.start(index + 1)

    def first_sequence(self, index: int) -> int:
        return index * self.segments


def plan_chunks(
    video_start: int, video_end: int, segment_seconds: float, chunk_seconds: float
) -> ChunkPlan:
    """As many chunks as the video's extent needs, each a whole number (>= 1) of segments."""
    segment_ticks = round(segment_seconds * CLOCK_HZ)  # the keyframe period of the encoder
    segments = max(1, round(chunk_seconds / segment_seconds))
    chunk_ticks = segments * segment_ticks
    return ChunkPlan(
        video_start, chunk_ticks, segments, (video_end - video_start) // chunk_ticks + 1
    )


def snap_audio(
    units: Iterable[AccessUnit], sample_rate: int, frame_samples: int
) -> Iterator[AccessUnit]:
    """The units with their times on the frame grid of the first one (each on its
    nearest grid frame; a hole of whole frames stays a hole). The packager anchors a
    segment's audio on its first unit, so units already on one grid give every chunk the
    same grid: no gap or overlap where one chunk's audio meets the next one's."""
    units = iter(units)
    first = next(units, None)
    if first is None:
        return
    origin = round(first.dts * sample_rate / CLOCK_HZ)
    frame_ticks = frame_samples * CLOCK_HZ / sample_rate
    for unit in itertools.chain([first], units):
        frame = round((unit.dts - first.dts) / frame_ticks)
        ticks = round((origin + frame * frame_samples) * CLOCK_HZ / sample_rate)
        yield AccessUnit(unit.kind, ticks, ticks, True, unit.data)


def chunk_audio(
    units: Iterable[AccessUnit], plan: ChunkPlan
) -> Iterator[tuple[int, list[AccessUnit]]]:
    """Each chunk's index and the units it may need, in chunk order, from units in time
    order: those of its range and a margin past both ends (the first chunk takes every
    unit before it, the last every one after). A chunk goes as soon as a unit passes its
    end, so only the one or two chunks a unit can still fall in are held."""

    def low(index: int) -> int | None:
        return None if index == 0 else plan.start(index) - AUDIO_MARGIN_TICKS

    def high(index: int) -> int | None:
        end = plan.end(index)
        return None if end is None else end + AUDIO_MARGIN_TICKS

    held: dict[int, list[AccessUnit]] = {}
    done = 0  # chunks handed on
    for unit in units:
        while done < plan.count and (end := high(done)) is not None and unit.dts >= end:
            yield done, held.pop(done, [])
            done += 1
        index = done
        while index < plan.count and ((start := low(index)) is None or unit.dts >= start):
            held.setdefault(index, []).append(unit)
            index += 1
    for index in range(done, plan.count):
        yield index, held.pop(index, [])


def pack_audio_unit(unit: AccessUnit) -> bytes:
    """One unit as a chunk's audio object (and the planner's spool file) holds it."""
    return _UNIT_HEADER.pack(unit.dts, len(unit.data)) + unit.data


def encode_audio_units(units: Iterable[AccessUnit]) -> bytes:
    return b"".join(pack_audio_unit(unit) for unit in units)


def read_audio_units(file: BinaryIO) -> Iterator[AccessUnit]:
    """The units `pack_audio_unit` wrote to `file`, from where it stands, one at a time."""
    while header := file.read(_UNIT_HEADER.size):
        if len(header) < _UNIT_HEADER.size:
            raise ValueError(f"an audio unit header cut short: {len(header)} bytes")
        dts, size = _UNIT_HEADER.unpack(header)
        data = file.read(size)
        if len(data) < size:
            raise ValueError(f"an audio unit of {size} bytes cut short at {len(data)}")
        yield AccessUnit(TrackKind.AUDIO, dts, dts, True, data)


def decode_audio_units(data: bytes) -> list[AccessUnit]:
    return list(read_audio_units(io.BytesIO(data)))


def chunk_audio_key(upload_id: uuid.UUID, index: int) -> str:
    return f"{upload_prefix(upload_id)}audio/{index:05d}"


def enqueue_chunks(upload_id: uuid.UUID, plan: ChunkPlan) -> None:
    """Only the upload's id and the plan's numbers go through the broker."""
    numbers = [plan.origin, plan.chunk_ticks, plan.segments, plan.count]
    for index in range(plan.count):
        celery_app.send_task(UPLOAD_CHUNK_TASK, args=[str(upload_id), index, numbers])


def extent_refusal(
    seconds: float, declared_seconds: float | None, max_seconds: float
) -> str | None:
    """Why video whose timestamps span `seconds` is not planned or packaged: past the
    absolute limit, or far past the duration the file declares (a packet with a far-off
    timestamp, which would otherwise plan chunks and segments for all the time between)."""
    if seconds > max_seconds:
        return (
            f"the video's timestamps span {seconds:.1f} s: longer than this server processes "
            f"({max_seconds:g} s, NEBULA_UPLOAD_MAX_SECONDS)"
        )
    if declared_seconds:
        limit = EXTENT_OVER_DECLARED * declared_seconds + EXTENT_SLACK_SECONDS
        if seconds > limit:
            return (
                f"the video's timestamps span {seconds:.1f} s, far beyond the "
                f"{declared_seconds:.1f} s the file declares (at most {limit:.1f} s): a packet "
                "carries a far-off timestamp"
            )
    return None


def discard_upload_objects(store: ObjectStore, upload_id: uuid.UUID) -> None:
    """Delete what an upload kept while it was processed (its file, its chunks' audio)."""
    try:
        store.delete_prefix(upload_prefix(upload_id))
    except Exception:  # noqa: BLE001 - the caller's outcome stands; a leftover is harmless
        log.exception("objects of upload %s not deleted", upload_id)


def give_up(settings: Settings, store: ObjectStore, upload_id: uuid.UUID, reason: str) -> str:
    """Delete what the upload kept first, so whoever hears of the failure finds the end
    state."""
    discard_upload_objects(store, upload_id)
    _, redis = worker_services()
    fail_upload(settings, redis, celery_app, upload_id, reason)
    return "failed"


def count_start(redis: Redis, task_id: str, retries: int) -> int:
    """Count one start of a task's message: a delivery. A retry is a message of its own
    (same id, one more retry), so it starts a count of its own."""
    key = f"nebula:task-starts:{task_id}:{retries}"
    with redis.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, START_COUNT_SECONDS)
        count, _ = pipe.execute()
    return count


class UploadTask(MediaTask):
    """An upload's job or one of its chunks: retried `NEBULA_UPLOAD_RETRIES` times, then
    the upload fails with the reason; started at most `NEBULA_UPLOAD_MAX_DELIVERIES` times
    for one message (a worker that died on it is what makes the broker deliver it again)."""

    @property
    def max_retries(self) -> int:
        return get_settings().upload_retries

    def delivered_too_often(self, settings: Settings, what: str) -> str | None:
        """Count this start; the reason to give up when the message has been started more
        than `NEBULA_UPLOAD_MAX_DELIVERIES` times. None when called outside a worker."""
        if self.request.called_directly or self.request.id is None:
            return None
        _, redis = worker_services()
        starts = count_start(redis, self.request.id, self.request.retries or 0)
        if starts <= settings.upload_max_deliveries:
            return None
        return (
            f"{what} was started {starts} times and its worker was lost each time before it "
            f"finished (out of memory or crashed; at most {settings.upload_max_deliveries}, "
            "NEBULA_UPLOAD_MAX_DELIVERIES)"
        )

    def on_retries_exhausted(
        self, exc: Exception, upload_id: str, *args: Any, **kwargs: Any
    ) -> str:
        settings = get_settings()
        store, _ = worker_services()
        return give_up(
            settings, store, uuid.UUID(upload_id), f"storage or database unavailable: {exc}"
        )


@celery_app.task(base=UploadTask, name=UPLOAD_CHUNK_TASK, bind=True)
def package_upload_chunk(
    self: UploadTask, upload_id: str, index: int, numbers: list[int]
) -> dict[str, Any] | str:
    """Encode and package one chunk of an upload's source. Safe to run again: a redelivery
    redoes this chunk only (same object keys, its own rows replaced), and a chunk already
    recorded as packaged is not redone. Storage and database faults are retried
    (`UploadTask`); a chunk that cannot be processed fails the upload with the reason."""
    settings = get_settings()
    store, _ = worker_services()
    done = chunk_done(settings.database_url, uuid.UUID(upload_id), index)
    if done is None:
        discard_upload_objects(store, uuid.UUID(upload_id))  # ready or failed: leftovers
        return "gone"
    if done:
        return "done already"
    job = _load_job(settings.database_url, uuid.UUID(upload_id))
    if job is None:
        return "gone"
    if reason := self.delivered_too_often(settings, f"chunk {index}"):
        return give_up(settings, store, job.upload_id, reason)
    plan = ChunkPlan(*numbers)
    try:
        report = _package_chunk(settings, store, job, plan, index)
    except ObjectNotFoundError as exc:  # deleted under it: the upload failed (or was redone)
        return give_up(
            settings, store, job.upload_id, f"chunk {index} lost its stored input: {exc}"
        )
    except (ValueError, av.FFmpegError) as exc:  # the media's fault: decoder, packager, muxer
        return give_up(settings, store, job.upload_id, f"chunk {index} cannot be processed: {exc}")
    if record_chunk(settings.database_url, job.upload_id, report):
        store.delete_prefix(upload_prefix(job.upload_id))  # the segments are the media now
    _, redis = worker_services()
    advance_upload(settings, redis, celery_app, job.session_id)
    return {"chunk": index, "segments": report.segments, "worker": report.worker}


def _load_job(database_url: str, upload_id: uuid.UUID) -> UploadJob | None:
    """The upload's job, or None once the upload or its session is gone."""
    with session_scope(database_url) as db:
        upload = db.get(Upload, upload_id)
        session = db.get(LiveSession, upload.session_id) if upload and upload.session_id else None
        return UploadJob.from_rows(upload, session) if session else None


def _forget_rows(database_url: str, job: UploadJob, plan: ChunkPlan, index: int) -> None:
    """A redelivered chunk starts its own source segments over (its rungs are upserted)."""
    first, end = plan.first_sequence(index), plan.end(index)
    with session_scope(database_url) as db:
        rendition = select(Rendition.id).where(
            Rendition.session_id == job.session_id, Rendition.name == SOURCE
        )
        rows = delete(Segment).where(
            Segment.rendition_id.in_(rendition.scalar_subquery()), Segment.sequence >= first
        )
        if end is not None:
            rows = rows.where(Segment.sequence < first + plan.segments)
        db.execute(rows)


def _package_chunk(
    settings: Settings, store: ObjectStore, job: UploadJob, plan: ChunkPlan, index: int
) -> ChunkReport:
    _forget_rows(settings.database_url, job, plan, index)
    _, redis = worker_services()
    writer = job.source_writer(settings, store)
    options = SourceOptions(
        settings.segment_seconds,
        EncoderOptions(settings.transcode_preset, settings.transcode_threads),
    )
    stored = 0
    with store.open_reader(job.object_key) as file, open_upload(file) as container:
        source = UploadSource(container, options)
        has_audio = any(isinstance(config, AudioConfig) for config in source.configs)
        audio = (
            decode_audio_units(store.get_bytes(chunk_audio_key(job.upload_id, index)))
            if has_audio
            else []
        )
        packaged = chunk_segments(source, audio, plan, index, settings.segment_seconds)
        for segment, packager in packaged:
            writer.write(segment, packager, metadata=job.metadata, bytes_ingested=job.size_bytes)
            stored += 1
            advance_upload(settings, redis, celery_app, job.session_id)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    log.info(
        "upload %s: chunk %s packaged into %s segments by %s", job.upload_id, index, stored, worker
    )
    return ChunkReport(index, stored, worker)


def chunk_segments(
    source: UploadSource,
    audio: list[AccessUnit],
    plan: ChunkPlan,
    index: int,
    segment_seconds: float,
) -> Iterator[tuple[PackagedSegment, SegmentPackager]]:
    """One chunk's segments (with the packager, whose meters the writer records), numbered
    and timed where they sit in the whole file's source rendition."""
    video = source.video_units(plan.start(index), plan.end(index), seek=index > 0)
    first = next(video, None)
    if first is None or not first.data:
        return
    packager = SegmentPackager(
        segment_seconds,
        first_sequence=plan.first_sequence(index),
        timeline_start=first.dts - plan.origin,
    )
    for config in source.configs:
        packager.configure(config)  # before any unit: closes nothing
    # Video first at equal times, as the single job interleaves them.
    units = heapq.merge(itertools.chain([first], video), audio, key=lambda unit: unit.dts)
    for unit in units:
        for segment in packager.push(unit):
            yield segment, packager
        if unit.kind is TrackKind.VIDEO and not unit.data:
            return  # the next chunk's first frame: it closed our last segment, opens its own
    for segment in packager.flush():
        yield segment, packager
