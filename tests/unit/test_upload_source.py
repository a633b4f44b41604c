"""Uploaded files into the live packager, on real files made by the ffmpeg CLI: H.264/AAC is
copied, VP9/Opus encoded with a keyframe opening every segment; ffmpeg decodes the result.
The probe that runs before: what it accepts, and the reason it gives for what it refuses,
the decode limits included; a playlist or script that would make FFmpeg fetch what it names
is refused before anything is fetched (a local HTTP server counts the requests)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import pytest

from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.types import CLOCK_HZ, AccessUnit
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_probe import (
    DecodeLimits,
    NotMediaError,
    UnusableMediaError,
    open_upload,
    probe_upload,
)
from packager.transcoding.upload_source import SourceOptions, UploadSource
from tests.media import make_media_file
from tests.services import RequestRecorder

SEGMENT_SECONDS = 1.0
SECONDS = 3
ONE_FRAME = CLOCK_HZ // 30
H264_AAC = ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "15", "-c:a", "aac"]
VP9_OPUS = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "75"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("upload-media")


def _make(folder: Path, name: str, *args: str, **options) -> Path:
    return make_media_file(folder / name, *args, seconds=SECONDS, size="320x240", **options)


def _package(path: Path) -> tuple[dict[str, str], list[AccessUnit], list[PackagedSegment]]:
    packager = SegmentPackager(SEGMENT_SECONDS)
    with path.open("rb") as file, av.open(file) as container:
        source = UploadSource(container, SourceOptions(SEGMENT_SECONDS, EncoderOptions()))
        for config in source.configs:
            assert packager.configure(config) == []
        units = list(source.access_units())
    segments = [s for unit in units for s in packager.push(unit)]
    return source.handling, units, segments + packager.flush()


def _decode(segments: list[PackagedSegment], tmp: Path) -> tuple[str, float]:
    path = tmp / "out.mp4"
    path.write_bytes(segments[0].init.data + b"".join(s.data for s in segments))
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr.strip(), sum(s.duration for s in segments)


def _keyframes(segment: PackagedSegment) -> list[bool]:
    with av.open(io.BytesIO(segment.init.data + segment.data), format="mp4") as container:
        return [p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size]


def test_h264_and_aac_are_copied_in_decode_order(folder: Path, tmp_path: Path) -> None:
    path = _make(folder, "h264-aac.mp4", *H264_AAC, "-pix_fmt", "yuv420p")
    handling, units, segments = _package(path)
    assert handling == {"video": "copy", "audio": "copy"}
    assert [u.dts for u in units] == sorted(u.dts for u in units)
    assert any(u.pts > u.dts for u in units)  # the B-frames came through as they were
    assert segments[0].init.codecs.startswith("avc1.") and "mp4a.40.2" in segments[0].init.codecs
    errors, seconds = _decode(segments, tmp_path)
    assert errors == ""
    assert abs(seconds - SECONDS) < 0.1


def test_vp9_and_opus_are_encoded_with_one_closed_gop_per_segment(
    folder: Path, tmp_path: Path
) -> None:
    path = _make(folder, "vp9-opus.mkv", *VP9_OPUS, "-c:a", "libopus")
    handling, units, segments = _package(path)
    assert handling == {"video": "encode", "audio": "encode"}
    assert [u.dts for u in units] == sorted(u.dts for u in units)
    # The source's keyframes are every 2.5 s; the encoded ones open every 1 s segment.
    assert [round(s.duration, 2) for s in segments[:-1]] == [SEGMENT_SECONDS] * (SECONDS - 1)
    for segment in segments:
        keyframes = _keyframes(segment)
        assert keyframes[0] and not any(keyframes[1:]), segment.sequence
    errors, seconds = _decode(segments, tmp_path)
    assert errors == ""
    assert abs(seconds - SECONDS) < 0.1


def test_a_video_only_file_gives_video_only_segments(folder: Path, tmp_path: Path) -> None:
    path = _make(folder, "vp9.webm", *VP9_OPUS, audio=False)
    handling, _, segments = _package(path)
    assert handling == {"video": "encode"}
    assert segments[0].init.audio is None
    errors, seconds = _decode(segments, tmp_path)
    assert errors == ""
    assert abs(seconds - SECONDS) < 2 * ONE_FRAME / CLOCK_HZ


@pytest.fixture(scope="module")
def refused(folder: Path) -> dict[str, Path]:
    mp4 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    whole = _make(folder, "whole.mp4", *mp4)
    indexed = _make(folder, "indexed.mp4", *mp4, "-movflags", "+faststart")
    paths = {
        "empty": folder / "empty.mp4",
        "text": folder / "notes.txt",
        "cut-index": folder / "cut-index.mp4",
        "cut-data": folder / "cut-data.mp4",
        "audio": _make(folder, "tone.m4a", "-c:a", "aac", video=False),
        "noise": folder / "noise.bin",
        "image": make_media_file(folder / "still.png", "-frames:v", "1", audio=False),
    }
    paths["noise"].write_bytes(bytes(range(256)) * 64)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("not a video\n" * 50)
    paths["cut-index"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    paths["cut-data"].write_bytes(indexed.read_bytes()[: indexed.stat().st_size // 2])
    return paths


@pytest.mark.parametrize(
    ("kind", "error", "reason"),
    [
        ("empty", NotMediaError, "the file is empty"),
        ("text", NotMediaError, "not a media file: it reads as text"),
        ("noise", NotMediaError, "not a media file: no demuxer recognises it"),
        ("image", UnusableMediaError, "a still image (png_pipe), not a video"),
        ("cut-index", UnusableMediaError, "an MP4/QuickTime file that cannot be read"),
        ("cut-data", UnusableMediaError, "the file is truncated or damaged: it declares 3.0 s"),
        ("audio", UnusableMediaError, "no video stream (found: audio (aac))"),
    ],
)
def test_the_probe_refuses_what_cannot_become_a_ladder(
    refused: dict[str, Path], kind: str, error: type[Exception], reason: str
) -> None:
    with refused[kind].open("rb") as file, pytest.raises(error) as caught:
        probe_upload(file)
    assert str(caught.value).startswith(reason), str(caught.value)


def test_the_probe_describes_what_it_accepts(folder: Path) -> None:
    path = _make(folder, "accepted.mkv", *VP9_OPUS, "-c:a", "libopus")
    with path.open("rb") as file:
        probed = probe_upload(file)
    assert probed.container == "matroska,webm"
    assert abs(probed.duration_seconds - SECONDS) < 0.1
    assert probed.video == {"codec": "vp9", "width": 320, "height": 240, "frame_rate": 30.0}
    assert probed.audio == {"codec": "opus", "sample_rate": 48000, "channels": 1}


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (
            DecodeLimits(max_pixels=320 * 240 - 1),
            "the video is 320x240 (76800 pixels a frame): more than this server decodes "
            "(76799 pixels, NEBULA_UPLOAD_MAX_PIXELS)",
        ),
        (
            DecodeLimits(max_seconds=2.5),
            "the file declares 3.0 s: longer than this server processes "
            "(2.5 s, NEBULA_UPLOAD_MAX_SECONDS)",
        ),
        (
            DecodeLimits(max_frame_rate=25),
            "the video runs at 30 frames/s: more than this server decodes "
            "(25 frames/s, NEBULA_UPLOAD_MAX_FRAME_RATE)",
        ),
    ],
)
def test_the_probe_refuses_media_past_a_decode_limit_saying_what_and_the_limit(
    refused: dict[str, Path], folder: Path, limits: DecodeLimits, reason: str
) -> None:
    path = _make(folder, "limits.mp4", "-c:v", "libx264", "-preset", "ultrafast")
    with path.open("rb") as file, pytest.raises(UnusableMediaError) as caught:
        probe_upload(file, limits)
    assert str(caught.value) == reason
    with path.open("rb") as file:  # the same file within the limits
        assert probe_upload(file, DecodeLimits(320 * 240, 3.5, 30)).video["width"] == 320


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        (
            "clip.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{url}/segment0.ts\n#EXT-X-ENDLIST\n",
            "an HLS playlist",
        ),
        ("clip.ffconcat", "ffconcat version 1.0\nfile {url}/part0.ts\n", "an FFmpeg concat script"),
    ],
)
def test_a_playlist_or_script_naming_urls_is_refused_before_anything_is_fetched(
    folder: Path, recording_server: RequestRecorder, name: str, text: str, what: str
) -> None:
    url, hits = recording_server.url, recording_server.hits
    path = folder / name
    path.write_text(text.format(url=url))
    with path.open("rb") as file, pytest.raises(NotMediaError) as caught:
        open_upload(file)  # a named file: FFmpeg's probe sees the .m3u8 extension
    assert str(caught.value) == (
        f"not a container we accept: {what} that FFmpeg would open with a demuxer outside the "
        "list (MP4/QuickTime, Matroska/WebM, FLV, MPEG-TS, MPEG-PS, AVI, Ogg)"
    )
    assert hits == []


def test_without_the_allowlist_ffmpeg_fetches_what_an_uploaded_playlist_names(
    folder: Path, recording_server: RequestRecorder
) -> None:
    """Why the allowlist is there, and that the server above would see a fetch."""
    url, hits = recording_server.url, recording_server.hits
    path = folder / "plain.m3u8"
    # A VOD playlist (ENDLIST): a live one is reloaded for minutes before ffmpeg gives up.
    path.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{url}/leak.ts\n#EXT-X-ENDLIST\n"
    )
    with path.open("rb") as file, pytest.raises(av.FFmpegError):
        av.open(file)
    assert hits == ["/leak.ts"]
