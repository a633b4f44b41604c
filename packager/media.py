"""Codec-neutral media types shared by the demuxers, the segmenter and the fMP4 writer.

All timestamps are integers on a 90 kHz clock (MPEG-TS's native clock; FLV milliseconds
convert exactly by multiplying by 90), so every component agrees without rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CLOCK_HZ = 90_000


class TrackKind(StrEnum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """H.264 decoder configuration as carried by FLV's AVC sequence header."""

    avcc: bytes  # AVCDecoderConfigurationRecord, stored verbatim in the avcC box
    width: int
    height: int
    profile_idc: int
    constraint_flags: int
    level_idc: int

    @property
    def codec_string(self) -> str:
        return f"avc1.{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """AAC decoder configuration (AudioSpecificConfig)."""

    asc: bytes
    object_type: int
    sample_rate: int
    channels: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded frame: video as AVCC (4-byte length-prefixed NAL units), audio a raw AAC frame."""

    kind: TrackKind
    dts: int
    pts: int
    keyframe: bool
    data: bytes
