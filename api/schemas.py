"""Response and request bodies of the public API (the interface contract)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.models import LiveSession, SessionStatus, Stream, StreamStatus, Upload, UploadStatus
from core.settings import Settings
from media.hls.target_duration import max_segment_ticks
from media.ladder import SOURCE, parse_ladder
from media.types import CLOCK_HZ
from packager.keys import recording_path
from packager.ladder_rows import quality_order
from packager.uploads import playback_url

# A GOP this many times the segment target makes segments that long: players stall.
GOP_WARNING_FACTOR = 1.5


def _valid_ladder(value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if value is not None:
        parse_ladder(value)
    return value


Ladder = Annotated[
    list[dict[str, Any]] | None,
    AfterValidator(_valid_ladder),
    Field(
        description='Rungs like `[{"name": "720p", "height": 720, "bitrate": 3000000}]`; '
        "[] for the source only; null for the default ladder.",
    ),
]


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    ladder: Ladder = None


class StreamUpdate(BaseModel):
    """Only the fields sent change; `ladder: null` goes back to the default ladder."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    ladder: Ladder = None
    enabled: bool | None = Field(
        None, description="false disables the stream: publishes are refused, a live one dropped."
    )


class StreamOut(BaseModel):
    id: uuid.UUID
    name: str
    stream_key: str | None = Field(
        None, description="Only in the answers that issue a key (create, reset-key)."
    )
    status: StreamStatus
    ladder: list[dict[str, Any]] | None = Field(description="null: the default ladder.")
    rtmp_url: str
    srt_url: str
    playback_url: str
    created_at: datetime

    @classmethod
    def build(cls, stream: Stream, settings: Settings, stream_key: str | None = None) -> StreamOut:
        key = stream_key or "{stream_key}"
        host = settings.public_host
        return cls(
            id=stream.id,
            name=stream.name,
            stream_key=stream_key,
            status=stream.status,
            ladder=stream.ladder,
            rtmp_url=f"rtmp://{host}:{settings.rtmp_port}/live/{key}",
            srt_url=f"srt://{host}:{settings.srt_port}?streamid=#!::r=live/{key},m=publish",
            playback_url=f"{settings.public_http_url}/hls/{stream.id}/master.m3u8",
            created_at=stream.created_at,
        )


class Page(BaseModel):
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")

    @classmethod
    def of(cls, items: list[Any], *, total: int, limit: int, offset: int) -> Self:
        """One page of `total` rows, with the offset of the next page if there is one."""
        next_offset = offset + limit if offset + limit < total else None
        return cls(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)


class StreamPage(Page):
    items: list[StreamOut]


class DisconnectOut(BaseModel):
    stream_id: uuid.UUID
    ingest_processes: int = Field(description="Ingest processes that heard the request.")


class RenditionOut(BaseModel):
    name: str
    width: int | None
    height: int | None
    frame_rate: float | None
    codecs: str
    bandwidth: int
    average_bandwidth: int
    segment_count: int


class SessionOut(BaseModel):
    id: uuid.UUID
    stream_id: uuid.UUID | None
    status: SessionStatus
    protocol: str
    started_at: datetime
    ended_at: datetime | None
    duration_seconds: float = Field(description="Wall-clock time from start to end (or now).")
    media_info: dict[str, Any] = Field(description="What the publisher sent: codecs, size, rate.")
    renditions: list[RenditionOut]
    segment_count: int = Field(description="Segments of the source rendition.")
    bytes_ingested: int
    gop_seconds: float | None = Field(description="Longest keyframe interval seen.")
    warnings: list[str] = Field(description="Advice for the streamer's encoder settings.")
    error: str | None
    playback_url: str = Field(description="This session's own recording (VOD once ended).")

    @classmethod
    def build(
        cls, session: LiveSession, segment_counts: dict[str, int], settings: Settings
    ) -> SessionOut:
        end = session.ended_at or datetime.now(UTC)
        renditions = [
            RenditionOut(
                name=r.name,
                width=r.width,
                height=r.height,
                frame_rate=r.frame_rate,
                codecs=r.codecs,
                bandwidth=r.bandwidth,
                average_bandwidth=r.average_bandwidth,
                segment_count=segment_counts.get(r.name, 0),
            )
            for r in sorted(session.renditions, key=quality_order)
        ]
        return cls(
            id=session.id,
            stream_id=session.stream_id,
            status=session.status,
            protocol=session.protocol,
            started_at=session.started_at,
            ended_at=session.ended_at,
            duration_seconds=round(max(0.0, (end - session.started_at).total_seconds()), 3),
            media_info=session.media_info or {},
            renditions=renditions,
            segment_count=segment_counts.get(SOURCE, 0),
            bytes_ingested=session.bytes_ingested,
            gop_seconds=session.gop_seconds,
            warnings=session_warnings(session, settings),
            error=session.error,
            playback_url=f"{settings.public_http_url}{recording_path(session.id)}",
        )


class SessionPage(Page):
    items: list[SessionOut]


def session_warnings(session: LiveSession, settings: Settings) -> list[str]:
    warnings = []
    limit = GOP_WARNING_FACTOR * settings.segment_seconds
    gop, td = session.gop_seconds, session.target_duration
    # Segments longer than the presentation's target duration, which never changes live.
    over_target = bool(td and gop and gop * CLOCK_HZ > max_segment_ticks(td))
    over_target_note = (
        f"segments ran longer than the {td} s target duration this stream's players were "
        "promised (it never changes while the stream is live), so some players stall or "
        "skip; a new target duration applies once the stream has been off air for "
        f"{settings.presentation_hold_seconds:g} s."
    )
    if gop is not None and gop > limit:
        warnings.append(
            f"keyframes arrive every {gop:g} s, longer than {limit:g} s: "
            f"segments run long and players buffer. Set the encoder's keyframe interval to "
            f"{settings.segment_seconds:g} s (OBS: Output > Keyframe Interval)."
            + (f" Also, {over_target_note}" if over_target else "")
        )
    elif over_target:
        warnings.append(
            f"keyframes arrived up to {gop:g} s apart: {over_target_note} Keep the keyframe "
            f"interval at {settings.segment_seconds:g} s."
        )
    if session.open_gop:
        warnings.append(
            "segments start on open-GOP pictures (HEVC CRA) that need the segment before "
            "them, so players cannot start or switch on them cleanly and the playlists do "
            "not claim independent segments. Set the encoder to closed GOPs (x265: "
            "open-gop=0)."
        )
    # What the ingest could not take (e.g. an MPEG-TS audio track in MP2).
    warnings += (session.media_info or {}).get("ingest", {}).get("warnings", [])
    return warnings


class UploadOut(BaseModel):
    id: uuid.UUID
    name: str
    filename: str
    status: UploadStatus
    progress: float = Field(description="0..1 over the whole job (source and rungs); 1 when ready.")
    error: str | None = Field(description="Why the upload failed; null otherwise.")
    playback_url: str | None = Field(
        description="The master playlist; it lists every rendition once `ready`."
    )
    session_id: uuid.UUID | None = Field(description="The session holding the recording.")
    size_bytes: int
    duration_seconds: float | None = Field(description="As the file declares it.")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def build(cls, upload: Upload, settings: Settings) -> UploadOut:
        return cls(
            id=upload.id,
            name=upload.name,
            filename=upload.filename,
            status=upload.status,
            progress=round(upload.progress, 4),
            error=upload.error,
            playback_url=playback_url(settings, upload),
            session_id=upload.session_id,
            size_bytes=upload.size_bytes,
            duration_seconds=upload.duration_seconds,
            created_at=upload.created_at,
            finished_at=upload.finished_at,
        )
