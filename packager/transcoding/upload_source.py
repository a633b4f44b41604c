"""An uploaded file as the live path's media: codec configurations, then access units.

H.264 video (avcC) and AAC audio (with its AudioSpecificConfig) are copied: a remux, no
quality lost, little CPU. Anything else is decoded and encoded: video by x264 at the source
size (rounded down to even), with a keyframe forced at the first frame of every segment
period and none elsewhere, so the packager cuts segments of the target length, each one
closed GOP; audio by the AAC encoder. The output is what the RTMP and SRT demuxers produce
(90 kHz, video as 4-byte length-prefixed NAL units), so the same SegmentPackager segments it.

A long file whose video is encoded is split into chunks that separate workers encode
(`video_units` of a time range, after `scan` has read the file once for its extent and
handed on its audio as it went); see `packager.tasks.upload_chunks`.

Pure apart from the CPU: an open container in, items out, no storage or database.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
from av.audio.resampler import AudioResampler
from av.codec.context import Flags
from av.video.frame import PictureType

from media.codecs.aac import AacError, parse_asc
from media.codecs.h264 import (
    H264Error,
    annexb_to_avcc,
    build_avcc,
    join_avcc,
    parse_avcc,
    split_avcc,
    video_config_from_annexb_header,
    video_config_from_avcc,
)
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind, VideoConfig
from packager.transcoding.transcode import (
    ENCODER,
    FALLBACK_FRAME_RATE,
    PIXEL_FORMAT,
    EncoderOptions,
)

# Constant quality for a transcoded source: it is the top of the ladder, the rungs' input.
SOURCE_CRF = "20"
# Well above any real GOP: keyframes come only where we force them.
MAX_KEYFRAME_INTERVAL = 100_000
AAC_ENCODER = "aac"
AAC_BITRATE = 128_000
AAC_FRAME_SAMPLES = 1024
AAC_SAMPLE_RATES = frozenset(
    {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000}
)
FALLBACK_SAMPLE_RATE = 48000
# Interleaving holds one track's units back until the other catches up; past this many,
# it lets them go (a track with a long gap must not hold the whole file in memory).
MAX_HELD_UNITS = 4096
# How far before a chunk's start to seek when a seek lands after it (a file without an
# index: the demuxer guesses by bytes); past the last, the chunk decodes from the file's start.
SEEK_MARGINS_SECONDS = (0, 5, 60)
# `scan` calls its keep-alive once per this many packets.
SCAN_KEEP_ALIVE_PACKETS = 2000


class UploadSourceError(ValueError):
    """The file's media cannot be turned into the source rendition."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    segment_seconds: float
    encoder: EncoderOptions


@dataclass(frozen=True, slots=True)
class SourceScan:
    """The file read once, its video not decoded: the first and last video presentation
    times (source clock, 90 kHz; None without any video packet)."""

    video_start: int | None
    video_end: int | None


class _Track(Protocol):
    kind: TrackKind
    copied: bool
    config: VideoConfig | AudioConfig

    def units(self, packet: av.Packet | None) -> list[AccessUnit]:
        """The units one packet gives (None: end of stream, flush what is held)."""
        ...


def _ticks(value: int, time_base: Fraction) -> int:
    return round(value * time_base * CLOCK_HZ)


class UploadSource:
    """One container's first video and first audio stream as configs and interleaved units."""

    def __init__(self, container: av.container.InputContainer, options: SourceOptions) -> None:
        if not container.streams.video:
            raise UploadSourceError("the file has no video stream")
        self.container = container
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        try:
            self.tracks: dict[av.stream.Stream, _Track] = {video: _video_track(video, options)}
            if audio is not None:
                self.tracks[audio] = _audio_track(audio)
        except (H264Error, AacError) as exc:
            raise UploadSourceError(f"codec configuration does not parse: {exc}") from exc

    @property
    def configs(self) -> list[VideoConfig | AudioConfig]:
        return [track.config for track in self.tracks.values()]

    @property
    def handling(self) -> dict[str, str]:
        """Which tracks are copied and which encoded: `{"video": "copy", "audio": "encode"}`."""
        return {t.kind.value: "copy" if t.copied else "encode" for t in self.tracks.values()}

    @property
    def video_encoded(self) -> bool:
        return not self._video[1].copied

    @property
    def _video(self) -> tuple[av.VideoStream, _Track]:
        return next((s, t) for s, t in self.tracks.items() if t.kind is TrackKind.VIDEO)

    def scan(
        self,
        audio: Callable[[AccessUnit], object],
        keep_alive: Callable[[], object] = lambda: None,
    ) -> SourceScan:
        """Demux the whole file: the video's extent from packet timestamps, and each audio
        unit handed to `audio` in decode order as it comes (copied, or encoded once for the
        whole file so that it has no seams), so the scan holds no more of a long file's
        audio than one packet gives."""
        stream, _ = self._video
        start: int | None = None
        end: int | None = None
        for count, packet in enumerate(self.container.demux(*self.tracks)):
            if count % SCAN_KEEP_ALIVE_PACKETS == 0:
                keep_alive()
            if not packet.size:
                continue
            track = self.tracks[packet.stream]
            if track.kind is TrackKind.AUDIO:
                for unit in track.units(packet):
                    audio(unit)
            elif packet.pts is not None:
                pts = _ticks(packet.pts, stream.time_base)
                start = pts if start is None else min(start, pts)
                end = pts if end is None else max(end, pts)
        for track in self.tracks.values():
            if track.kind is TrackKind.AUDIO:
                for unit in track.units(None):
                    audio(unit)
        return SourceScan(start, end)

    def video_units(self, start: int, end: int | None, *, seek: bool) -> Iterator[AccessUnit]:
        """The video whose source presentation times are in [start, end) (90 kHz; `end` None:
        to the end), encoded with a keyframe forced on the segment grid from `start`.

        `seek` False decodes from the file's first frame and keeps every frame before `end`.
        When the file goes on past `end`, the last unit is an empty keyframe at the first
        frame there, not encoded: where the next range starts, so the packager closes this
        range's last segment exactly there."""
        stream, track = self._video
        if not isinstance(track, _EncodedVideo):
            raise UploadSourceError("the video is copied, not encoded: it is not split")
        track.next_keyframe = start
        frames = self._frames_from(stream, start) if seek else _decoded(self, stream)
        for pts, frame in frames:
            if seek and pts < start:
                continue
            if end is not None and pts >= end:
                yield from track.flush()
                yield AccessUnit(TrackKind.VIDEO, pts, pts, True, b"")
                return
            yield from track.encode(frame)
        yield from track.flush()

    def _frames_from(
        self, stream: av.VideoStream, start: int
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames from the keyframe at or before `start` on: seek there, and further
        back while the seek lands after `start`, at last to the file's start."""
        for margin in SEEK_MARGINS_SECONDS:
            target = _stream_time(start - margin * CLOCK_HZ, stream.time_base)
            self.container.seek(target, stream=stream, backward=True)
            frames = _decoded(self, stream)
            first = next(frames, None)
            if first is not None and first[0] <= start:
                yield first
                yield from frames
                return
        self.container.seek(self.container.start_time or 0, backward=True)
        yield from _decoded(self, stream)

    def access_units(self) -> Iterator[AccessUnit]:
        """Every unit of both tracks in decode-time order, as a live publisher sends them."""
        held: dict[TrackKind, deque[AccessUnit]] = {t.kind: deque() for t in self.tracks.values()}
        for packet in self.container.demux(*self.tracks):
            if not packet.size:
                continue
            track = self.tracks[packet.stream]
            held[track.kind].extend(track.units(packet))
            yield from _release(held)
        for track in self.tracks.values():
            held[track.kind].extend(track.units(None))
        yield from heapq.merge(*held.values(), key=lambda unit: unit.dts)


def _stream_time(ticks: int, time_base: Fraction) -> int:
    return int(Fraction(ticks, CLOCK_HZ) / time_base)


def _decoded(source: UploadSource, stream: av.VideoStream) -> Iterator[tuple[int, av.VideoFrame]]:
    """The video stream's frames from where the container stands, with their pts in ticks."""
    decoder = stream.codec_context
    for packet in source.container.demux(stream):
        for frame in decoder.decode(packet if packet.size else None):
            if frame.pts is not None and frame.time_base is not None:
                yield _ticks(frame.pts, frame.time_base), frame


def _release(held: dict[TrackKind, deque[AccessUnit]]) -> Iterator[AccessUnit]:
    """Units that can go: the earliest head while every track has one, or an overfull queue."""
    queues = list(held.values())
    while True:
        if all(queues):
            yield min((q for q in queues), key=lambda q: q[0].dts).popleft()
        elif full := next((q for q in queues if len(q) > MAX_HELD_UNITS), None):
            yield full.popleft()
        else:
            return


def _video_track(stream: av.VideoStream, options: SourceOptions) -> _Track:
    """Copied when it is H.264 with an avcC record we can read; encoded otherwise (Annex B
    H.264 from MPEG-TS included: re-encoding it is simpler than rebuilding its headers)."""
    extradata = bytes(stream.codec_context.extradata or b"")
    if stream.codec_context.name == "h264" and extradata[:1] == b"\x01":
        with contextlib.suppress(H264Error):
            return _CopiedVideo(stream, extradata)
    return _EncodedVideo(stream, options)


def _audio_track(stream: av.AudioStream) -> _Track:
    """Copied when it is AAC with an AudioSpecificConfig we can read; encoded otherwise."""
    extradata = bytes(stream.codec_context.extradata or b"")
    if stream.codec_context.name == "aac" and extradata:
        with contextlib.suppress(AacError):
            return _CopiedAudio(stream, extradata)
    return _EncodedAudio(stream)


class _CopiedVideo:
    kind = TrackKind.VIDEO
    copied = True

    def __init__(self, stream: av.VideoStream, avcc: bytes) -> None:
        record = parse_avcc(avcc)
        self.length_size = record.nal_length_size
        if self.length_size != 4:  # the packager's units carry 4-byte lengths
            avcc = build_avcc(record.sps, record.pps)
        self.config = video_config_from_avcc(avcc)
        self.time_base = stream.time_base

    def units(self, packet: av.Packet | None) -> list[AccessUnit]:
        if packet is None:
            return []
        data = bytes(packet)
        if self.length_size != 4:
            data = join_avcc(split_avcc(data, self.length_size))
        dts = packet.dts if packet.dts is not None else packet.pts
        pts = packet.pts if packet.pts is not None else dts
        if dts is None:
            return []
        return [
            AccessUnit(
                self.kind,
                _ticks(dts, self.time_base),
                _ticks(pts, self.time_base),
                packet.is_keyframe,
                data,
            )
        ]


class _CopiedAudio:
    kind = TrackKind.AUDIO
    copied = True

    def __init__(self, stream: av.AudioStream, asc: bytes) -> None:
        self.config = parse_asc(asc)
        self.time_base = stream.time_base

    def units(self, packet: av.Packet | None) -> list[AccessUnit]:
        if packet is None:
            return []
        time = packet.dts if packet.dts is not None else packet.pts
        if time is None:
            return []
        ticks = _ticks(time, self.time_base)
        return [AccessUnit(self.kind, ticks, ticks, True, bytes(packet))]


class _EncodedVideo:
    kind = TrackKind.VIDEO
    copied = False

    def __init__(self, stream: av.VideoStream, options: SourceOptions) -> None:
        self.decoder = stream.codec_context
        self.decoder.thread_count = options.encoder.threads
        self.width = self.decoder.width & ~1
        self.height = self.decoder.height & ~1
        if self.width < 2 or self.height < 2:
            raise UploadSourceError(
                f"video size {self.decoder.width}x{self.decoder.height} is too small"
            )
        encoder = av.CodecContext.create(ENCODER, "w")
        encoder.width, encoder.height = self.width, self.height
        encoder.pix_fmt = PIXEL_FORMAT
        encoder.time_base = Fraction(1, CLOCK_HZ)
        encoder.framerate = stream.average_rate or stream.guessed_rate or FALLBACK_FRAME_RATE
        encoder.gop_size = MAX_KEYFRAME_INTERVAL
        encoder.max_b_frames = 0
        encoder.thread_count = options.encoder.threads
        encoder.flags |= Flags.global_header  # SPS/PPS in extradata, for the avcC
        encoder.options = {
            "preset": options.encoder.preset,
            "crf": SOURCE_CRF,
            "sc_threshold": "0",
            "forced-idr": "1",
        }
        encoder.open()
        self.encoder = encoder
        self.config = video_config_from_annexb_header(bytes(encoder.extradata or b""))
        self.period = round(options.segment_seconds * CLOCK_HZ)
        self.next_keyframe: int | None = None
        self.last_pts: int | None = None

    def units(self, packet: av.Packet | None) -> list[AccessUnit]:
        units = []
        for frame in self.decoder.decode(packet):
            units += self.encode(frame)
        if packet is None:
            units += self.flush()
        return units

    def flush(self) -> list[AccessUnit]:
        return self._units(self.encoder.encode(None))

    def encode(self, frame: av.VideoFrame) -> list[AccessUnit]:
        if frame.pts is None or frame.time_base is None:
            return []
        pts = _ticks(frame.pts, frame.time_base)
        if self.last_pts is not None and pts <= self.last_pts:
            return []  # a repeated timestamp: x264 needs strictly increasing ones
        self.last_pts = pts
        image = frame.reformat(self.width, self.height, PIXEL_FORMAT)
        image.pts, image.time_base = pts, Fraction(1, CLOCK_HZ)
        image.pict_type = PictureType.NONE
        if self.next_keyframe is None or pts >= self.next_keyframe:
            image.pict_type = PictureType.I
            self.next_keyframe = pts if self.next_keyframe is None else self.next_keyframe
            while self.next_keyframe <= pts:
                self.next_keyframe += self.period
        return self._units(self.encoder.encode(image))

    def _units(self, packets: list[av.Packet]) -> list[AccessUnit]:
        return [
            AccessUnit(
                self.kind,
                packet.pts if packet.dts is None else packet.dts,
                packet.pts,
                packet.is_keyframe,
                annexb_to_avcc(bytes(packet)),
            )
            for packet in packets
        ]


class _EncodedAudio:
    kind = TrackKind.AUDIO
    copied = False

    def __init__(self, stream: av.AudioStream) -> None:
        self.decoder = stream.codec_context
        rate = self.decoder.sample_rate
        rate = rate if rate in AAC_SAMPLE_RATES else FALLBACK_SAMPLE_RATE
        layout = "stereo" if self.decoder.layout.nb_channels >= 2 else "mono"
        self.resampler = AudioResampler(
            format="fltp", layout=layout, rate=rate, frame_size=AAC_FRAME_SAMPLES
        )
        encoder = av.CodecContext.create(AAC_ENCODER, "w")
        encoder.sample_rate = rate
        encoder.layout = layout
        encoder.format = "fltp"
        encoder.bit_rate = AAC_BITRATE
        encoder.time_base = Fraction(1, rate)
        encoder.open()
        self.encoder = encoder
        self.config = parse_asc(bytes(encoder.extradata or b""))

    def units(self, packet: av.Packet | None) -> list[AccessUnit]:
        frames = [r for f in self.decoder.decode(packet) for r in self.resampler.resample(f)]
        if packet is None:
            frames += self.resampler.resample(None)
        packets = [p for frame in frames for p in self.encoder.encode(frame)]
        if packet is None:
            packets += self.encoder.encode(None)
        return [self._unit(p) for p in packets if p.pts is not None]

    def _unit(self, packet: av.Packet) -> AccessUnit:
        ticks = _ticks(packet.pts, self.encoder.time_base)
        return AccessUnit(self.kind, ticks, ticks, True, bytes(packet))
