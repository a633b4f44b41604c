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


class VideoCodec(StrEnum):
    H264 = "h264"
    HEVC = "hevc"


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """Decoder configuration of an H.264 or HEVC track, as its sample entry carries it.

    Built by `media.codecs.h264.video_config_from_avcc` or
    `media.codecs.hevc.video_config_from_hvcc`, which also derive the RFC 6381 codec string
    from the record.
    """

    codec: VideoCodec
    record: bytes  # AVCDecoderConfigurationRecord (avcC) or HEVCDecoderConfigurationRecord (hvcC)
    width: int
    height: int
    codec_string: str  # RFC 6381, e.g. avc1.64001f or hvc1.1.6.L93.B0


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """AAC decoder configuration (AudioSpecificConfig)."""

    asc: bytes
    object_type: int
    sample_rate: int
    channels: int
    # Samples one frame lasts at `sample_rate`: an AAC frame codes 1024 samples at the core
    # rate, and explicitly signalled HE-AAC gives the SBR output rate, twice that: 2048.
    frame_samples: int = 1024

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded frame: video as 4-byte length-prefixed NAL units, audio a raw AAC frame.

    The parameter sets (SPS/PPS, and VPS for HEVC) belong in the `VideoConfig` record; HEVC
    samples must not repeat them (the `hvc1` sample entry forbids it).
    """

    kind: TrackKind
    dts: int
    pts: int
    keyframe: bool
    data: bytes
