"""What a session records about its source: codec, profile, size, frame rate, bitrate."""

from __future__ import annotations

from typing import Any

from packager.h264 import parse_avcc, parse_sps
from packager.media import AudioConfig, VideoConfig

H264_PROFILES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
}
AAC_OBJECT_TYPES = {1: "Main", 2: "LC", 3: "SSR", 4: "LTP", 5: "HE-AAC", 29: "HE-AACv2"}
METADATA_FIELDS = ("encoder", "videodatarate", "audiodatarate", "framerate")


def video_frame_rate(video: VideoConfig, metadata: dict[str, Any]) -> float | None:
    """The SPS timing info when the encoder wrote it, else what onMetaData announced."""
    sps_rate = parse_sps(parse_avcc(video.avcc).sps[0]).frame_rate
    if sps_rate:
        return round(sps_rate, 3)
    announced = metadata.get("framerate")
    return round(float(announced), 3) if isinstance(announced, int | float) and announced else None


def describe_source(
    video: VideoConfig | None, audio: AudioConfig | None, metadata: dict[str, Any]
) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if video is not None:
        info["video"] = {
            "codec": "h264",
            "profile": H264_PROFILES.get(video.profile_idc, str(video.profile_idc)),
            "level": video.level_idc / 10,
            "width": video.width,
            "height": video.height,
            "frame_rate": video_frame_rate(video, metadata),
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
