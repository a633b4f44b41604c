"""Real media for tests, made by the ffmpeg CLI, and real clients that publish and play it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from media.demux.flv import FlvDemuxer, FlvTagType, iter_flv_tags
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.types import AccessUnit, AudioConfig, VideoConfig


def make_source(
    path: Path,
    *,
    seconds: float,
    size: str = "1920x1080",
    rate: int = 30,
    gop: int = 60,
    audio: bool = True,
    video_bitrate: str = "3M",
) -> Path:
    """H.264 high with B-frames (+ AAC), keyframes every `gop` frames, as FLV."""
    if path.exists():
        return path
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"]
    cmd += ["-b:v", video_bitrate, "-bf", "2", "-g", str(gop), "-keyint_min", str(gop)]
    cmd += ["-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=300)
    return path


def make_media_file(
    path: Path,
    *codec_args: str,
    seconds: float = 4,
    size: str = "854x480",
    rate: int = 30,
    video: bool = True,
    audio: bool = True,
) -> Path:
    """A test pattern (and a tone) in whatever container and codecs `codec_args` ask of the
    ffmpeg CLI, e.g. `-c:v libvpx-vp9 -c:a libopus` into `x.mkv`."""
    cmd = ["ffmpeg", "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), *codec_args, str(path)]
    subprocess.run(cmd, check=True, timeout=300)
    return path


def publish(source: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    """`ffmpeg -re -c copy` to an RTMP URL, the way an encoder streams in real time."""
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-i", str(source), *extra, "-c", "copy", "-f", "flv", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def decode(url: str, timeout: float = 120) -> tuple[str, float]:
    """Decode everything with ffmpeg; returns what it printed at -v error and the duration."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", url, "-f", "null", "-", "-progress", "pipe:1", "-nostats"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    seconds = 0.0
    for line in result.stdout.splitlines():
        if line.startswith("out_time_us="):
            value = line.split("=", 1)[1]
            if value.isdigit():
                seconds = int(value) / 1e6
    return result.stderr.strip(), seconds


def probe(url: str) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def media_duration(path: Path) -> float:
    return float(probe(str(path))["format"]["duration"])


def flv_items(path: Path) -> list[AccessUnit | VideoConfig | AudioConfig]:
    """An FLV file through the ingest path's demuxer: what a publisher's connection pushes."""
    demuxer = FlvDemuxer()
    items: list[AccessUnit | VideoConfig | AudioConfig] = []
    for tag in iter_flv_tags(path.read_bytes()):
        if tag.tag_type is FlvTagType.VIDEO:
            items += demuxer.video(tag.timestamp_ms, tag.payload)
        elif tag.tag_type is FlvTagType.AUDIO:
            items += demuxer.audio(tag.timestamp_ms, tag.payload)
    return items


def package_flv(path: Path, packager: SegmentPackager | None = None) -> list[PackagedSegment]:
    """Run an FLV file through the ingest path's demuxer and packager: the source segments."""
    packager = packager or SegmentPackager(2.0)
    segments: list[PackagedSegment] = []
    for item in flv_items(path):
        if isinstance(item, AccessUnit):
            segments += packager.push(item)
        else:
            segments += packager.configure(item)
    return segments + packager.flush()


def make_ts_source(
    path: Path,
    *,
    seconds: float,
    size: str = "854x480",
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    ts_offset: float | None = None,
) -> Path:
    """30 fps with B-frames, a keyframe every second (+ 48 kHz audio), as MPEG-TS; x265 for
    `video_codec="libx265"`, ffmpeg's MPEG-TS default MP2 for `audio_codec="mp2"`."""
    if path.exists():
        return path
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds)]
    cmd += ["-c:v", video_codec, "-preset", "veryfast", "-bf", "2", "-g", "30"]
    cmd += ["-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "1M"]
    if video_codec == "libx265":
        cmd += ["-x265-params", "log-level=error:scenecut=0"]
    cmd += ["-c:a", audio_codec, "-b:a", "128k", "-ar", "48000", "-ac", "2"]
    if ts_offset is not None:
        cmd += ["-output_ts_offset", str(ts_offset)]
    cmd += ["-f", "mpegts", str(path)]
    subprocess.run(cmd, check=True, timeout=300)
    return path


def publish_ts(source: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    """`ffmpeg -re -c copy` as MPEG-TS to a URL (srt://, udp://), in real time."""
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-i", str(source), "-c", "copy", *extra]
        + ["-f", "mpegts", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
