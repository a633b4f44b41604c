"""Real media for tests, made by the ffmpeg CLI, and real clients that publish and play it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ingest.spool_record import SpoolRecord
from media.demux.flv import FlvDemuxer, FlvTag, FlvTagType, iter_flv_tags
from media.demux.mpegts import TsDemuxer
from media.hls.segment_packager import InitSegment, PackagedSegment, SegmentPackager
from media.types import AccessUnit, AudioConfig, VideoConfig
from tests.fixtures.rtmp.client_bytes import (
    HANDSHAKE_SIZE,
    ServerOutput,
    command,
    message_chunks,
    plain_c0c1,
)


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
    timeout: float = 300,
) -> Path:
    """A test pattern (and a tone) in whatever container and codecs `codec_args` ask of the
    ffmpeg CLI, e.g. `-c:v libvpx-vp9 -c:a libopus` into `x.mkv`."""
    cmd = ["ffmpeg", "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), *codec_args, str(path)]
    subprocess.run(cmd, check=True, timeout=timeout)
    return path


def explicit_he_aac_asc(core_rate_index: int = 6, output_rate_index: int = 3) -> bytes:
    """An AudioSpecificConfig that signals HE-AAC explicitly, as Apple requires in fMP4:
    object type 5, the core rate (default 24 kHz), stereo, the SBR output rate (48 kHz),
    then the LC core (object type 2, all-zero GASpecificConfig). No encoder on the machine
    writes it (no libfdk_aac), so tests build it bit by bit."""
    bits = f"{5:05b}{core_rate_index:04b}{2:04b}{output_rate_index:04b}{2:05b}000"
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def publish(source: Path, url: str, *extra: str, loop: bool = False) -> subprocess.Popen[bytes]:
    """`ffmpeg -re -c copy` to an RTMP URL, the way an encoder streams in real time; `loop`
    repeats the file until the process is stopped."""
    looping = ["-stream_loop", "-1"] if loop else []
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", *looping, "-i", str(source), *extra]
        + ["-c", "copy", "-f", "flv", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def publish_until_taken(source: Path, url: str, deadline: float) -> subprocess.Popen[bytes]:
    """ffmpeg again every 2 s until the ingest takes the publish (it runs for a while), as
    OBS's automatic reconnect does; `deadline` on the monotonic clock."""
    while time.monotonic() < deadline:
        publisher = publish(source, url)
        try:
            publisher.wait(2)
        except subprocess.TimeoutExpired:
            return publisher
        time.sleep(2)
    raise TimeoutError("the ingest never took the publish")


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


def flv_items(path: Path | Iterable[FlvTag]) -> list[AccessUnit | VideoConfig | AudioConfig]:
    """An FLV file (or its tags) through the ingest path's demuxer: what a publisher's
    connection pushes."""
    demuxer = FlvDemuxer()
    items: list[AccessUnit | VideoConfig | AudioConfig] = []
    tags = iter_flv_tags(path.read_bytes()) if isinstance(path, Path) else path
    for tag in tags:
        if tag.tag_type is FlvTagType.VIDEO:
            items += demuxer.video(tag.timestamp_ms, tag.payload)
        elif tag.tag_type is FlvTagType.AUDIO:
            items += demuxer.audio(tag.timestamp_ms, tag.payload)
    return items


def package_flv(
    path: Path | Iterable[FlvTag], packager: SegmentPackager | None = None
) -> list[PackagedSegment]:
    """Run an FLV file (or its tags) through the ingest path's demuxer and packager: the
    source segments."""
    packager = packager or SegmentPackager(2.0)
    segments: list[PackagedSegment] = []
    for item in flv_items(path):
        if isinstance(item, AccessUnit):
            segments += packager.push(item)
        else:
            segments += packager.configure(item)
    return segments + packager.flush()


def bare_segment(
    sequence: int, *, start_ticks: int | None = None, init: int = 0, discontinuity: bool = False
) -> PackagedSegment:
    """A 2 s segment's facts without media (what the spool keeps beside its bytes)."""
    audio = AudioConfig(b"\x12\x10", 2, 44100, 2)
    start = sequence * 180_000 if start_ticks is None else start_ticks
    return PackagedSegment(
        sequence, start, 180_000, b"", InitSegment(init, b"init", None, audio), discontinuity
    )


def spool_record(
    segment: PackagedSegment, session_id: uuid.UUID, stream_id: uuid.UUID | None = None
) -> SpoolRecord:
    """The sidecar a publication spools `segment` with, on a session timeline from 0."""
    return SpoolRecord(
        stream_id=stream_id or uuid.uuid4(),
        session_id=session_id,
        segment=replace(segment, data=b""),
        timeline_start=0,
        wall_clock_origin=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        transcode=False,
        metadata={"encoder": "test", "framerate": 30.0},
        bytes_ingested=segment.sequence * 1000,
        gop_seconds=2.0,
        target_duration=2,
    )


def package_ts(path: Path, packager: SegmentPackager | None = None) -> list[PackagedSegment]:
    """Run an MPEG-TS file through the SRT path's demuxer and packager."""
    packager = packager or SegmentPackager(2.0)
    demuxer = TsDemuxer()
    segments: list[PackagedSegment] = []
    for item in demuxer.feed(path.read_bytes()) + demuxer.flush():
        segments += (
            packager.push(item) if isinstance(item, AccessUnit) else packager.configure(item)
        )
    return segments + packager.flush()


def audio_ahead_of_the_first_keyframe(tags: Iterable[FlvTag], lead_ms: int = 64) -> list[FlvTag]:
    """The tags with video stamped `lead_ms` later and the first keyframe sent before any
    audio frame: audio stamped before the first keyframe arrives after it, as an encoder
    that interleaves loosely sends it (ffmpeg's FLV muxer would put it in order)."""
    shifted = [
        FlvTag(tag.tag_type, tag.timestamp_ms + lead_ms, tag.payload)
        if tag.tag_type is FlvTagType.VIDEO
        else tag
        for tag in tags
    ]

    def is_keyframe(tag: FlvTag) -> bool:  # frame type 1, AVC NALU (not the sequence header)
        return tag.tag_type is FlvTagType.VIDEO and tag.payload[0] >> 4 == 1 and tag.payload[1]

    keyframe = shifted.pop(next(i for i, tag in enumerate(shifted) if is_keyframe(tag)))
    first_audio = next(
        i for i, tag in enumerate(shifted) if tag.tag_type is FlvTagType.AUDIO and tag.payload[1]
    )
    shifted.insert(first_audio, keyframe)
    return shifted


def publish_flv_tags(port: int, key: str, tags: Iterable[FlvTag], timeout: float = 30) -> None:
    """Publish FLV tags over RTMP exactly in the order and with the stamps given, then
    unpublish: an encoder whose quirks the ffmpeg CLI would tidy up."""
    messages = {FlvTagType.AUDIO: 4, FlvTagType.VIDEO: 6, FlvTagType.SCRIPT_DATA: 5}
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        connect = command("connect", 1.0, {"app": "live", "tcUrl": f"rtmp://127.0.0.1:{port}/live"})
        sock.sendall(plain_c0c1() + bytes(HANDSHAKE_SIZE) + message_chunks(3, 20, connect))
        sock.sendall(message_chunks(3, 20, command("createStream", 2.0)))
        publish = command("publish", 3.0, None, key, "live")
        sock.sendall(message_chunks(8, 20, publish, stream_id=1))
        output, deadline = ServerOutput(), time.monotonic() + timeout
        codes: list[str] = []
        while "NetStream.Publish.Start" not in codes:
            if time.monotonic() > deadline or not (data := sock.recv(65536)):
                raise AssertionError(f"the publish was not accepted; statuses {codes}")
            output.feed(data)
            codes = [v[3].get("code") for _, v in output.commands() if v[0] == "onStatus"]
        for tag in tags:
            sock.sendall(
                message_chunks(
                    messages[tag.tag_type],
                    int(tag.tag_type),
                    tag.payload,
                    timestamp=tag.timestamp_ms,
                    stream_id=1,
                )
            )
        sock.sendall(message_chunks(8, 20, command("deleteStream", 4.0, None, 1.0)))


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
