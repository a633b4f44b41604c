"""Ladder rows in PostgreSQL: the plan of a session's rungs, what a ladder task reads about
its source segment, and the upserts recording what it made. A task may run twice
(redelivery after a lost worker), so every write is an upsert that a second run repeats
harmlessly.

The plan is made when the session's source is known (its first segment): every rung gets
its row with the CODECS its pinned profile and level give, its size, frame rate and seeded
bandwidths, and every rendition its place in the master. The first master a player can
fetch then lists the whole ladder, and tasks never change what it advertises.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.models import LiveSession, Rendition, Segment, SegmentStatus
from core.settings import Settings
from media.hls.bandwidth import seeded_bit_rate
from media.ladder import DEFAULT_LADDER, SOURCE, Rung, parse_ladder, rungs_for_source
from packager.keys import media_key, segment_name
from packager.variant_rates import record_segment_rate

log = logging.getLogger(__name__)


def quality_order(rendition: Rendition) -> tuple[bool, int]:
    """Sort key: the source first as the top quality, then the rungs from tallest down."""
    return rendition.name != SOURCE, -(rendition.height or 0)


@dataclass(frozen=True, slots=True)
class VariantPolicy:
    """What planning and measuring variants needs from the settings."""

    target_seconds: float
    first_variant_bitrate: int
    assumed_audio_bitrate: int

    @classmethod
    def from_settings(cls, settings: Settings) -> VariantPolicy:
        return cls(
            settings.segment_seconds,
            settings.first_variant_bitrate,
            settings.assumed_audio_bitrate,
        )


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """One closed source segment, and the rungs its session's ladder gives it."""

    stream_id: uuid.UUID | None  # None: an uploaded file's session
    session_id: uuid.UUID
    sequence: int
    duration: float
    program_date_time: datetime | None
    discontinuity: bool
    object_key: str
    init_key: str
    rungs: list[Rung]
    rung_init_keys: dict[str, str | None]  # each planned rung's last written init object

    @property
    def init_name(self) -> str:
        """The source's init object name (`init_{n}.mp4`); each rung's init shares it."""
        return self.init_key.rpartition("/")[2]

    @property
    def init_index(self) -> int:
        return int(self.init_name.removeprefix("init_").removesuffix(".mp4"))

    def rung_key(self, rung: Rung, name: str) -> str:
        return media_key(self.stream_id, rung.name, self.session_id, name)

    def init_written(self, rung: Rung) -> bool:
        """Whether the rung's init object for this segment is stored already: it is the
        same for every segment, and served immutable, so it is written once."""
        return self.rung_init_keys.get(rung.name) == self.rung_key(rung, self.init_name)


def load_source_segment(db: Session, session_id: uuid.UUID, sequence: int) -> SourceSegment | None:
    """None when the segment is gone (its session deleted since the task was queued)."""
    row = db.execute(
        select(Segment, Rendition, LiveSession)
        .join(Rendition, Segment.rendition_id == Rendition.id)
        .join(LiveSession, Rendition.session_id == LiveSession.id)
        .where(
            LiveSession.id == session_id,
            Rendition.name == SOURCE,
            Segment.sequence == sequence,
        )
    ).first()
    if row is None:
        return None
    segment, rendition, session = row
    return SourceSegment(
        stream_id=session.stream_id,
        session_id=session.id,
        sequence=segment.sequence,
        duration=segment.duration,
        program_date_time=segment.program_date_time,
        discontinuity=segment.discontinuity,
        object_key=segment.object_key,
        init_key=segment.init_key,
        rungs=session_rungs(session, rendition),
        rung_init_keys={r.name: r.init_key for r in session.renditions if r.name != SOURCE},
    )


def session_rungs(session: LiveSession, source: Rendition) -> list[Rung]:
    """The rungs the session's ladder gives its source rendition; none for audio only."""
    if not (source.width and source.height):
        return []
    ladder = parse_ladder(session.ladder) if session.ladder is not None else DEFAULT_LADDER
    return rungs_for_source(ladder, source.width, source.height, source.frame_rate)


def plan_ladder(
    db: Session, session: LiveSession, source: Rendition, policy: VariantPolicy
) -> None:
    """Give every rung of the session its row, and every rendition its place in the master.

    Idempotent: rows that exist keep what they have (a reconnect does not change what the
    master advertised), seeds only raise bandwidths, and places, once given, stay.
    """
    announced = (session.media_info or {}).get("announced") or {}
    audio_codecs = source.codecs.split(",")[1:]  # InitSegment.codecs: the video's comes first
    audio = _announced_bit_rate(announced, "audiodatarate") if audio_codecs else 0
    if audio is None:
        audio = policy.assumed_audio_bitrate
    video = _announced_bit_rate(announced, "videodatarate")
    if video:  # the source's own measure so far is its first segment: the seed may say more
        source.bandwidth = max(source.bandwidth or 0, seeded_bit_rate(video, audio))
    for rung in session_rungs(session, source):
        planned = insert(Rendition).values(
            session_id=session.id,
            name=rung.name,
            codecs=",".join([rung.video_codec, *audio_codecs]),
            width=rung.width,
            height=rung.height,
            frame_rate=source.frame_rate,
            bandwidth=seeded_bit_rate(rung.max_bitrate, audio),
            average_bandwidth=seeded_bit_rate(rung.video_bitrate, audio),
        )
        db.execute(
            planned.on_conflict_do_update(
                index_elements=["session_id", "name"],
                set_={
                    "bandwidth": func.greatest(Rendition.bandwidth, planned.excluded.bandwidth),
                    # A row a task made before rungs were planned has no codecs yet.
                    "codecs": func.coalesce(
                        func.nullif(Rendition.codecs, ""), planned.excluded.codecs
                    ),
                },
            )
        )
    db.flush()
    renditions = db.scalars(
        select(Rendition)
        .where(Rendition.session_id == session.id)
        .execution_options(populate_existing=True)
    ).all()
    place_variants(renditions, policy.first_variant_bitrate)


def _announced_bit_rate(announced: dict[str, Any], field: str) -> int | None:
    """An onMetaData rate (kbit/s, as the FLV spec and OBS give it) in bit/s."""
    value = announced.get(field)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return round(value * 1000)
    return None


def place_variants(renditions: Sequence[Rendition], first_variant_bitrate: int) -> None:
    """The variant closest to `first_variant_bitrate` first (players start on it), then the
    rest in quality order; renditions placed before keep their place, new ones go last."""
    unplaced = [r for r in renditions if r.position is None]
    if not unplaced:
        return
    ordered = sorted(unplaced, key=quality_order)
    if len(unplaced) == len(renditions):
        measured = [r for r in ordered if r.bandwidth]
        if measured:
            first = min(measured, key=lambda r: abs(r.bandwidth - first_variant_bitrate))
            ordered.remove(first)
            ordered.insert(0, first)
    start = max((r.position for r in renditions if r.position is not None), default=-1) + 1
    for offset, rendition in enumerate(ordered):
        rendition.position = start + offset


def plan_missing_rungs(db: Session, source: SourceSegment, policy: VariantPolicy) -> None:
    """Plan the ladder of a session that began before ladders were planned up front, before
    a task records its rungs (locking the source row first, as the source writer does)."""
    if all(rung.name in source.rung_init_keys for rung in source.rungs):
        return
    session = db.get(LiveSession, source.session_id)
    source_rendition = db.scalars(
        select(Rendition)
        .where(Rendition.session_id == source.session_id, Rendition.name == SOURCE)
        .with_for_update()
    ).one()
    plan_ladder(db, session, source_rendition, policy)


@dataclass(frozen=True, slots=True)
class RungOutcome:
    """What a task made of one rung: `codecs` and `size_bytes` only when it succeeded."""

    rung: Rung
    codecs: str | None = None
    size_bytes: int = 0

    @property
    def status(self) -> SegmentStatus:
        return SegmentStatus.READY if self.codecs else SegmentStatus.FAILED


def record_rung_segment(
    db: Session,
    source: SourceSegment,
    outcome: RungOutcome,
    policy: VariantPolicy,
    *,
    missed_deadline: bool = False,
) -> None:
    """Upsert the rung's segment row and count it in the rung's bandwidths; a failure never
    overwrites a success. The rung's row comes from the plan, which advertised its CODECS:
    what x264 made is only checked against it.

    `missed_deadline` marks a failure written because the rung segment is late (listed as a
    gap); a late success replaces it but keeps the mark."""
    rung = outcome.rung
    rendition = db.scalars(
        select(Rendition)
        .where(Rendition.session_id == source.session_id, Rendition.name == rung.name)
        .with_for_update()
    ).one()
    init_key = source.rung_key(rung, source.init_name)
    values = {
        "rendition_id": rendition.id,
        "sequence": source.sequence,
        "duration": source.duration,
        "program_date_time": source.program_date_time,
        "discontinuity": source.discontinuity,
        "object_key": source.rung_key(rung, segment_name(source.sequence)),
        "init_key": init_key,
        "size_bytes": outcome.size_bytes,
        "status": outcome.status,
    }
    upsert = insert(Segment).values(**values, missed_deadline=missed_deadline)
    if outcome.status == SegmentStatus.FAILED:
        db.execute(upsert.on_conflict_do_nothing(index_elements=["rendition_id", "sequence"]))
        return
    if outcome.codecs != rendition.codecs:
        log.warning(
            "rung %s of session %s advertises %s but segment %s is %s",
            rung.name,
            source.session_id,
            rendition.codecs,
            source.sequence,
            outcome.codecs,
        )
    before = db.execute(
        select(Segment.size_bytes, Segment.duration).where(
            Segment.rendition_id == rendition.id,
            Segment.sequence == source.sequence,
            Segment.status == SegmentStatus.READY,
        )
    ).first()
    db.execute(
        upsert.on_conflict_do_update(index_elements=["rendition_id", "sequence"], set_=values)
    )
    rendition.init_key = init_key
    counted_bytes, counted_seconds = before or (0, 0.0)
    record_segment_rate(
        db,
        rendition,
        source.sequence,
        added_bytes=outcome.size_bytes - counted_bytes,
        added_seconds=source.duration - counted_seconds,
        target_seconds=policy.target_seconds,
    )
