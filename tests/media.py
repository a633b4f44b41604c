"""Real media for tests, made by the ffmpeg CLI, and real clients that publish and play it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ingest.flv import FlvDemuxer, FlvTagType, iter_flv_tags
from packager.live import LivePackager, PackagedSegment
from packager.media import AccessUnit


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


def package_flv(path: Path, packager: LivePackager | None = None) -> list[PackagedSegment]:
    """Run an FLV file through the ingest path's demuxer and packager: the source segments."""
    packager = packager or LivePackager(2.0)
    demuxer = FlvDemuxer()
    segments: list[PackagedSegment] = []
    for tag in iter_flv_tags(path.read_bytes()):
        if tag.tag_type is FlvTagType.VIDEO:
            items = demuxer.video(tag.timestamp_ms, tag.payload)
        elif tag.tag_type is FlvTagType.AUDIO:
            items = demuxer.audio(tag.timestamp_ms, tag.payload)
        else:
            continue
        for item in items:
            if isinstance(item, AccessUnit):
                segments += packager.push(item)
            else:
                segments += packager.configure(item)
    return segments + packager.flush()
