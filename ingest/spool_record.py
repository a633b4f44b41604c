"""What a spooled segment needs besides its bytes to be stored and recorded, as JSON.

The spool (`ingest.spool`) writes one of these beside every segment file (the sidecar),
so a process that did not make the segment, such as the ingest started again after a
crash, can store and record it: its session and stream, its place on the session's
timeline, its init segment (bytes and codec configurations: the rendition row is made
from them), and what the publication knew when it closed it. No I/O here.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from media.hls.segment_packager import InitSegment, PackagedSegment
from media.types import AudioConfig, VideoCodec, VideoConfig

FORMAT = 1


class SpoolRecordError(ValueError):
    """A sidecar that cannot be read back (truncated, another format, a missing field)."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    stream_id: uuid.UUID
    session_id: uuid.UUID
    segment: PackagedSegment  # its `data` empty: the bytes are in the segment file
    # The publication's writer: its timeline start and wall clock there, which date the
    # segment (`packager.source_writer`), and whether the session has a ladder.
    timeline_start: int
    wall_clock_origin: datetime
    transcode: bool
    metadata: dict[str, Any]
    bytes_ingested: int
    gop_seconds: float | None
    target_duration: int | None


def encode(record: SpoolRecord) -> bytes:
    segment = record.segment
    document = {
        "format": FORMAT,
        "stream_id": str(record.stream_id),
        "session_id": str(record.session_id),
        "sequence": segment.sequence,
        "start_ticks": segment.start_ticks,
        "duration_ticks": segment.duration_ticks,
        "discontinuity": segment.discontinuity,
        "independent": segment.independent,
        "video_frames": segment.video_frames,
        "init": _encode_init(segment.init),
        "timeline_start": record.timeline_start,
        "wall_clock_origin": record.wall_clock_origin.isoformat(),
        "transcode": record.transcode,
        "metadata": record.metadata,
        "bytes_ingested": record.bytes_ingested,
        "gop_seconds": record.gop_seconds,
        "target_duration": record.target_duration,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode(data: bytes) -> SpoolRecord:
    """The record `encode` made; `SpoolRecordError` naming what is wrong otherwise."""
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise SpoolRecordError(f"sidecar format {document.get('format')!r}, not {FORMAT}")
        segment = PackagedSegment(
            sequence=int(document["sequence"]),
            start_ticks=int(document["start_ticks"]),
            duration_ticks=int(document["duration_ticks"]),
            data=b"",
            init=_decode_init(document["init"]),
            discontinuity=bool(document["discontinuity"]),
            independent=bool(document["independent"]),
            video_frames=int(document["video_frames"]),
        )
        return SpoolRecord(
            stream_id=uuid.UUID(document["stream_id"]),
            session_id=uuid.UUID(document["session_id"]),
            segment=segment,
            timeline_start=int(document["timeline_start"]),
            wall_clock_origin=datetime.fromisoformat(document["wall_clock_origin"]),
            transcode=bool(document["transcode"]),
            metadata=dict(document["metadata"]),
            bytes_ingested=int(document["bytes_ingested"]),
            gop_seconds=document["gop_seconds"],
            target_duration=document["target_duration"],
        )
    except SpoolRecordError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpoolRecordError(f"unreadable sidecar: {type(exc).__name__}: {exc}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _encode_init(init: InitSegment) -> dict[str, Any]:
    video, audio = init.video, init.audio
    return {
        "index": init.index,
        "data": _b64(init.data),
        "video": None
        if video is None
        else {
            "codec": video.codec.value,
            "record": _b64(video.record),
            "width": video.width,
            "height": video.height,
            "codec_string": video.codec_string,
        },
        "audio": None
        if audio is None
        else {
            "asc": _b64(audio.asc),
            "object_type": audio.object_type,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "frame_samples": audio.frame_samples,
        },
    }


def _decode_init(document: dict[str, Any]) -> InitSegment:
    video, audio = document["video"], document["audio"]
    return InitSegment(
        index=int(document["index"]),
        data=_unb64(document["data"]),
        video=None
        if video is None
        else VideoConfig(
            codec=VideoCodec(video["codec"]),
            record=_unb64(video["record"]),
            width=int(video["width"]),
            height=int(video["height"]),
            codec_string=str(video["codec_string"]),
        ),
        audio=None
        if audio is None
        else AudioConfig(
            asc=_unb64(audio["asc"]),
            object_type=int(audio["object_type"]),
            sample_rate=int(audio["sample_rate"]),
            channels=int(audio["channels"]),
            frame_samples=int(audio["frame_samples"]),
        ),
    )
