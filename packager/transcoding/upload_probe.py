"""Is an uploaded file something we can turn into a ladder? Decided before a job is queued.

Cheap on purpose, since it runs in the API on a file read through ranged GETs: open the
container, check its size, duration and frame rate against the limits, decode the first
video frame, then seek to the last keyframe before the declared end and demux (not decode)
to the end. A file cut short keeps its header's promises about a duration its data no
longer reaches, which that last read shows.

Only the container formats a media file comes in are opened (`open_upload`, which the
workers use too): FFmpeg's playlist and script demuxers (hls, dash, concat, ...) open the
URLs and paths an uploaded file names, so they are refused before any of them runs.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import av

from core.settings import Settings

# Packets read to find the first decodable video frame before calling the video broken.
FIRST_FRAME_PACKETS = 300
# How far before the declared end the truncation check seeks, and how far short of the end
# the data may stop (a last frame's duration, rounding) before the file counts as truncated.
END_CHECK_SECONDS = 1.0
END_TOLERANCE_SECONDS = 1.0
# Container signatures: a file that carries one but does not open is damaged media, not a
# file of another kind. (offset, magic, what)
MEDIA_SIGNATURES = (
    (4, b"ftyp", "an MP4/QuickTime file"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"),
    (0, b"FLV", "an FLV file"),
    (0, b"RIFF", "a RIFF (AVI/WAV) file"),
    (0, b"OggS", "an Ogg file"),
    (0, b"\x00\x00\x01\xba", "an MPEG program stream"),
)


# The demuxers an upload may be opened with (FFmpeg's names; "mov" is mov/mp4/m4a/3gp,
# "matroska" is Matroska and WebM).
ACCEPTED_DEMUXERS = ("mov", "matroska", "flv", "mpegts", "avi", "ogg", "mpeg")
ACCEPTED_CONTAINERS = "MP4/QuickTime, Matroska/WebM, FLV, MPEG-TS, MPEG-PS, AVI, Ogg"
# Demuxers that read only the file itself, let through the open so that the refusal can say
# what the file is: ffmpeg renders text as ANSI art (tty) and takes a single picture as a
# one-frame stream.
TEXT_DEMUXER = "tty"
IMAGE_DEMUXER_SUFFIX = "_pipe"
_IDENTIFIED_DEMUXERS = (
    TEXT_DEMUXER,
    *sorted(name for name in av.formats_available if name.endswith(IMAGE_DEMUXER_SUFFIX)),
)
# FFmpeg's `format_whitelist`: it refuses (EINVAL) any other demuxer before it reads a byte
# of the file's header.
_OPEN_OPTIONS = {"format_whitelist": ",".join(ACCEPTED_DEMUXERS + _IDENTIFIED_DEMUXERS)}
# What a refused container most likely is, from its first bytes: (magic, what).
REFUSED_SIGNATURES = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an FFmpeg concat script"),
    (b"<?xml", "an XML document (a DASH manifest?)"),
)


class NotMediaError(ValueError):
    """Not a file any demuxer we have can read (HTTP 415)."""


class UnusableMediaError(ValueError):
    """Media, but not something we can publish: no video, broken or truncated (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """The most an upload may ask of the workers that decode it (None: no limit)."""

    max_pixels: int | None = None
    max_seconds: float | None = None
    max_frame_rate: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeLimits:
        return cls(
            settings.upload_max_pixels, settings.upload_max_seconds, settings.upload_max_frame_rate
        )


@dataclass(frozen=True, slots=True)
class ProbedMedia:
    container: str
    duration_seconds: float | None
    video: dict[str, Any]
    audio: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "duration_seconds": self.duration_seconds,
            "video": self.video,
            "audio": self.audio,
        }


def open_upload(file: BinaryIO) -> av.container.InputContainer:
    """Open an uploaded file with an accepted demuxer, or raise NotMediaError or
    UnusableMediaError saying why not."""
    head = file.read(16)
    file.seek(0)
    if not head:
        raise NotMediaError("the file is empty")
    try:
        container = av.open(file, mode="r", options=_OPEN_OPTIONS)
    except av.FFmpegError as exc:
        if exc.errno == errno.EINVAL:  # recognised, but by a demuxer not on the list
            what = next((w for magic, w in REFUSED_SIGNATURES if head.startswith(magic)), None)
            raise NotMediaError(
                f"not a container we accept: {what or 'a format'} that FFmpeg would open with "
                f"a demuxer outside the list ({ACCEPTED_CONTAINERS})"
            ) from exc
        kind = _signature(head)
        if kind is None:
            raise NotMediaError(
                f"not a media file: no demuxer recognises it ({exc.strerror})"
            ) from exc
        raise UnusableMediaError(
            f"{kind} that cannot be read ({exc.strerror}): it is truncated or damaged"
        ) from exc
    demuxer = container.format.name
    if demuxer == TEXT_DEMUXER:
        container.close()
        raise NotMediaError("not a media file: it reads as text")
    if demuxer.endswith(IMAGE_DEMUXER_SUFFIX):
        container.close()
        raise UnusableMediaError(f"a still image ({demuxer}), not a video")
    return container


def probe_upload(file: BinaryIO, limits: DecodeLimits | None = None) -> ProbedMedia:
    """Raise NotMediaError or UnusableMediaError with a message for the uploader, else
    describe it."""
    limits = limits or DecodeLimits()
    with open_upload(file) as container:
        demuxer = container.format.name
        if not container.streams.video:
            found = ", ".join(
                f"{s.type} ({s.codec_context.name})" for s in container.streams if s.codec_context
            )
            raise UnusableMediaError(f"no video stream (found: {found or 'nothing playable'})")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        codec = video.codec_context.name
        duration = _declared_duration(container, video)
        frame_rate = _frame_rate(video)
        # Before the first frame is decoded: a huge picture costs the API its memory.
        _within_limits(
            video.codec_context.width, video.codec_context.height, duration, frame_rate, limits
        )
        _first_frame(container, video, codec)
        if duration is not None:
            _reaches_end(container, video, duration)
        return ProbedMedia(
            container=demuxer,
            duration_seconds=round(duration, 3) if duration is not None else None,
            video={
                "codec": codec,
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "frame_rate": frame_rate,
            },
            audio=audio
            and {
                "codec": audio.codec_context.name,
                "sample_rate": audio.codec_context.sample_rate,
                "channels": audio.codec_context.channels,
            },
        )


def _within_limits(
    width: int, height: int, seconds: float | None, frame_rate: float | None, limits: DecodeLimits
) -> None:
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise UnusableMediaError(
            f"the video is {width}x{height} ({width * height} pixels a frame): more than this "
            f"server decodes ({limits.max_pixels} pixels, NEBULA_UPLOAD_MAX_PIXELS)"
        )
    if limits.max_seconds is not None and seconds is not None and seconds > limits.max_seconds:
        raise UnusableMediaError(
            f"the file declares {seconds:.1f} s: longer than this server processes "
            f"({limits.max_seconds:g} s, NEBULA_UPLOAD_MAX_SECONDS)"
        )
    if (
        limits.max_frame_rate is not None
        and frame_rate is not None
        and frame_rate > limits.max_frame_rate
    ):
        raise UnusableMediaError(
            f"the video runs at {frame_rate:g} frames/s: more than this server decodes "
            f"({limits.max_frame_rate:g} frames/s, NEBULA_UPLOAD_MAX_FRAME_RATE)"
        )


def _signature(head: bytes) -> str | None:
    for offset, magic, kind in MEDIA_SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def _first_frame(container: av.container.InputContainer, video: av.VideoStream, codec: str) -> None:
    try:
        for count, packet in enumerate(container.demux(video)):
            if count >= FIRST_FRAME_PACKETS:
                break
            if packet.size and packet.decode():
                return
    except av.FFmpegError as exc:
        raise UnusableMediaError(f"the video ({codec}) does not decode: {exc.strerror}") from exc
    raise UnusableMediaError(
        f"the video ({codec}) does not decode: no frame from its first {FIRST_FRAME_PACKETS} "
        "packets"
    )


def _declared_duration(
    container: av.container.InputContainer, video: av.VideoStream
) -> float | None:
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _reaches_end(
    container: av.container.InputContainer, video: av.VideoStream, duration: float
) -> None:
    tb = video.time_base
    start = video.start_time or 0
    target = max(0.0, duration - END_CHECK_SECONDS)
    reached = 0.0
    try:
        container.seek(start + int(target / tb), stream=video, backward=True)
        for packet in container.demux(video):
            if packet.size and packet.pts is not None:
                end = (packet.pts + (packet.duration or 0) - start) * tb
                reached = max(reached, float(end))
    except av.FFmpegError as exc:
        raise UnusableMediaError(
            f"the file is truncated or damaged: reading near its declared end "
            f"({duration:.1f} s) failed: {exc.strerror}"
        ) from exc
    if reached < duration - END_TOLERANCE_SECONDS:
        raise UnusableMediaError(
            f"the file is truncated or damaged: it declares {duration:.1f} s of video but "
            f"its data stops at {reached:.1f} s"
        )


def _frame_rate(video: av.VideoStream) -> float | None:
    rate: Fraction | None = video.average_rate or video.guessed_rate
    return round(float(rate), 3) if rate else None
