"""What a session records about its source: codec, profile, size, frame rate, bitrate."""

from __future__ import annotations

from typing import Any, NamedTuple

from media.codecs import h264, hevc
from media.types import AudioConfig, VideoCodec, VideoConfig

H264_PROFILES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}
# general_profile_idc (H.265 A.3), named as ffprobe names them.
HEVC_PROFILES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "Rext", 9: "SCC"}
AAC_OBJECT_TYPES = {1: "Main", 2: "LC", 3: "SSR", 4: "LTP", 5: "HE-AAC", 29: "HE-AACv2"}
METADATA_FIELDS = ("encoder", "videodatarate", "audiodatarate", "framerate")
MAX_PLAUSIBLE_FRAME_RATE = 240.0


class _CodecFacts(NamedTuple):
    profile: str
    level: float
    sps_frame_rate: float | None


def _codec_facts(video: VideoConfig) -> _CodecFacts:
    """Profile name, level number (4.1) and SPS timing, read from the decoder record."""
    if video.codec is VideoCodec.HEVC:
        record = hevc.parse_hvcc(video.record)
        sps = hevc.parse_sps(record.nal_units(hevc.NalType.SPS)[0])
        profile = HEVC_PROFILES.get(record.profile_idc, str(record.profile_idc))
        # general_level_idc is 30 times the level number (A.4.1).
        return _CodecFacts(profile, round(record.level_idc / 30, 1), sps.frame_rate)
    avcc = h264.parse_avcc(video.record)
    profile = H264_PROFILES.get(avcc.profile_idc, str(avcc.profile_idc))
    return _CodecFacts(profile, avcc.level_idc / 10, h264.parse_sps(avcc.sps[0]).frame_rate)


def video_frame_rate(
    video: VideoConfig, metadata: dict[str, Any], counted: float | None = None
) -> float | None:
    """The SPS timing info when the encoder wrote it, else what onMetaData announced, else
    `counted` (frames over the duration of a segment), so FRAME-RATE is always known.

    x264 fed a 90 kHz time base (our own upload transcodes) writes that clock as its VUI
    timing, which reads as tens of thousands of frames a second: a rate no camera or screen
    makes is the time base, not the frame rate, and the next source is asked instead."""
    sps_rate = _codec_facts(video).sps_frame_rate
    if sps_rate and sps_rate <= MAX_PLAUSIBLE_FRAME_RATE:
        return round(sps_rate, 3)
    announced = metadata.get("framerate")
    if isinstance(announced, int | float) and announced > 0:
        return round(float(announced), 3)
    return round(counted, 3) if counted else None


def describe_source(
    video: VideoConfig | None,
    audio: AudioConfig | None,
    metadata: dict[str, Any],
    counted_frame_rate: float | None = None,
) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if video is not None:
        facts = _codec_facts(video)
        info["video"] = {
            "codec": str(video.codec),
            "profile": facts.profile,
            "level": facts.level,
            "width": video.width,
            "height": video.height,
            "frame_rate": video_frame_rate(video, metadata, counted_frame_rate),
            "codec_string": video.codec_string,
        }
    if audio is not None:
        info["audio"] = {
            "codec": "aac",
            "profile": AAC_OBJECT_TYPES.get(audio.object_type, str(audio.object_type)),
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "codec_string": audio.codec_string,
        }
    announced = {k: metadata[k] for k in METADATA_FIELDS if k in metadata}
    if announced:
        info["announced"] = announced
    return info
