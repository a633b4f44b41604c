"""One source segment in, one CMAF segment per ladder rung out: decode once, scale, x264.

Pure apart from the CPU: bytes in, bytes out, no storage or database.

Timing. Rungs are encoded without B-frames, so x264 returns frames in presentation order
with nothing to reorder. Frame i of a rung then takes the i-th decode time and the i-th
presentation time of the source segment (each sorted); the i-th smallest presentation time
is never below the i-th smallest decode time, so composition offsets stay >= 0. The result:
tfdt, sample durations, presentation times and the segment end are exactly the source's,
in every rung, and a player switches rungs at any boundary without a jump. The price of no
B-frames is a few per cent of compression at a given quality; it also spares x264 the
reorder delay, which matters for segment latency.

Codec. Each rung is pinned to H.264 High profile at the level its ladder entry computes
(`Rung.video_codec`), so the master advertises the CODECS every segment will have before
the first one is encoded; x264 leaves timing out of its SPS, so a rung's init segment is the
same for every source segment and is written once.

GOP. Every segment gets a fresh encoder whose keyframe interval exceeds the segment's frame
count and whose scene-cut detection is off: one closed GOP per segment, opening on an IDR.
An HEVC source may use open GOPs (x265's default): a segment opening on a CRA decodes
without the RASL pictures that lean on the previous segment, and the rungs show the CRA's
picture in their place (a hold of a frame or two, and the timing stays exact).

Audio. The only audio ingest accepts is AAC (FLV sound format 10); its samples are copied
as they are, with the source's decode times and durations, so every rung shares the
source's audio byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame

from media.codecs.aac import AacError, parse_asc
from media.codecs.h264 import H264Error, annexb_to_avcc, video_config_from_annexb_header
from media.codecs.hevc import HevcError, skipped_leading_pictures
from media.hls.segment_packager import InitSegment
from media.ladder import Rung
from media.mp4.fmp4 import (
    AUDIO_TRACK_ID,
    Sample,
    TrackFragment,
    fragments_from_access_units,
    init_segment,
    media_segment,
)
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind

ENCODER = "libx264"
PIXEL_FORMAT = "yuv420p"
PROFILE = "high"  # media.ladder.Rung.video_codec's avc1.64
SCALER = "BICUBIC"  # what the ffmpeg CLI's scale filter uses by default
FALLBACK_FRAME_RATE = Fraction(30)


class TranscodeError(ValueError):
    """The source segment cannot be transcoded (corrupt, or no video): retrying won't help."""


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    preset: str = "veryfast"
    # Threads per decoder and encoder. One worker process per core runs best with 1: the
    # processes already fill the cores and extra threads only add synchronisation.
    threads: int = 1


@dataclass(frozen=True, slots=True)
class RungSegment:
    rung: Rung
    init: InitSegment
    data: bytes
    frame_rate: float


@dataclass(frozen=True, slots=True)
class _Source:
    """What the source segment's packets tell before any decoding; times on 90 kHz."""

    video: list[av.Packet]
    audio: list[av.Packet]
    audio_config: AudioConfig | None
    frame_rate: Fraction
    decode_times: list[int]  # sorted
    presentation_times: list[int]  # sorted
    video_end: int  # decode time just after the last frame: the next segment's start


def transcode_segment(
    source_init: bytes,
    source_segment: bytes,
    rungs: Sequence[Rung],
    *,
    sequence: int,
    init_index: int,
    options: EncoderOptions,
) -> list[RungSegment]:
    """Encode every rung of one source segment (`rungs` already fitted to the source)."""
    if not rungs:
        return []
    try:
        with av.open(io.BytesIO(source_init + source_segment), format="mp4") as container:
            source = _demux(container)
            decoder = container.streams.video[0].codec_context
            decoder.thread_count = options.threads
            encoders = [
                _encoder(rung, len(source.video), source.frame_rate, options) for rung in rungs
            ]
            packets: list[list[av.Packet]] = [[] for _ in rungs]
            skipped = _skipped_leading_pictures(decoder, source.video)
            decoded = 0
            for packet in [*source.video, None]:
                for frame in decoder.decode(packet):
                    # Pictures the decoder skipped at the start are shown as the first one it
                    # returns, each at its own time, so every rung keeps the source's frames.
                    held = source.presentation_times[:skipped] if decoded == 0 else []
                    for pts in [*held, frame.pts]:
                        decoded += 1
                        for encoder, rung, out in zip(encoders, rungs, packets, strict=True):
                            out += encoder.encode(_scaled(frame, rung, pts))
            for encoder, out in zip(encoders, packets, strict=True):
                out += encoder.encode(None)
    except av.FFmpegError as exc:
        raise TranscodeError(f"source segment {sequence} does not decode: {exc}") from exc
    if decoded != len(source.video):
        raise TranscodeError(
            f"source segment {sequence}: decoded {decoded} frames from {len(source.video)} packets"
        )
    audio_fragment = _copied_audio(source)
    return [
        _rung_segment(rung, encoder, out, source, audio_fragment, sequence, init_index)
        for rung, encoder, out in zip(rungs, encoders, packets, strict=True)
    ]


def _demux(container: av.container.InputContainer) -> _Source:
    if not container.streams.video:
        raise TranscodeError("source segment has no video track")
    video_stream = container.streams.video[0]
    audio_stream = container.streams.audio[0] if container.streams.audio else None
    audio_config = None
    if audio_stream is not None:
        try:
            audio_config = parse_asc(bytes(audio_stream.codec_context.extradata or b""))
        except AacError as exc:
            raise TranscodeError(f"source audio is not AAC as ingest promises: {exc}") from exc
    if video_stream.time_base != Fraction(1, CLOCK_HZ):
        raise TranscodeError(f"source video timescale is {video_stream.time_base}, expected 90 kHz")
    video: list[av.Packet] = []
    audio: list[av.Packet] = []
    for packet in container.demux():
        if packet.size == 0 or packet.dts is None:
            continue
        (video if packet.stream is video_stream else audio).append(packet)
    if not video:
        raise TranscodeError("source segment has no video frames")
    last = video[-1]
    return _Source(
        video,
        audio,
        audio_config,
        video_stream.guessed_rate or FALLBACK_FRAME_RATE,
        decode_times=sorted(p.dts for p in video),
        presentation_times=sorted(p.dts if p.pts is None else p.pts for p in video),
        video_end=last.dts + (last.duration or 0),
    )


def _encoder(
    rung: Rung, frame_count: int, frame_rate: Fraction, options: EncoderOptions
) -> VideoCodecContext:
    encoder = av.CodecContext.create(ENCODER, "w")
    encoder.width, encoder.height = rung.width, rung.height
    encoder.pix_fmt = PIXEL_FORMAT
    encoder.time_base = Fraction(1, CLOCK_HZ)
    encoder.framerate = frame_rate
    encoder.bit_rate = rung.video_bitrate
    encoder.gop_size = frame_count + 1
    encoder.max_b_frames = 0
    encoder.thread_count = options.threads
    encoder.flags |= Flags.global_header  # SPS/PPS in extradata, for the avcC of the init
    encoder.options = {
        "preset": options.preset,
        "maxrate": str(rung.max_bitrate),
        "bufsize": str(rung.buffer_size),
        "keyint_min": str(frame_count + 1),
        "sc_threshold": "0",
        "profile": PROFILE,
        "level": f"{rung.h264_level / 10:.1f}",
    }
    return encoder


def _skipped_leading_pictures(decoder: VideoCodecContext, video: list[av.Packet]) -> int:
    """An HEVC segment opening on a CRA (open GOP) loses its RASL pictures: see hevc.py."""
    if decoder.name != "hevc":
        return 0
    try:
        return skipped_leading_pictures([bytes(p) for p in video])
    except (H264Error, HevcError) as exc:
        raise TranscodeError(f"source HEVC samples do not parse: {exc}") from exc


def _scaled(frame: VideoFrame, rung: Rung, pts: int | None) -> VideoFrame:
    scaled = frame.reformat(rung.width, rung.height, PIXEL_FORMAT, interpolation=SCALER)
    scaled.pts = pts
    scaled.pict_type = 0  # AV_PICTURE_TYPE_NONE: let x264 choose, not copy the source's types
    return scaled


def _copied_audio(source: _Source) -> TrackFragment | None:
    if not source.audio or source.audio_config is None:
        return None
    samples = [Sample(bytes(p), p.duration or 0) for p in source.audio]
    return TrackFragment(AUDIO_TRACK_ID, source.audio[0].dts, samples)


def _rung_segment(
    rung: Rung,
    encoder: VideoCodecContext,
    packets: list[av.Packet],
    source: _Source,
    audio: TrackFragment | None,
    sequence: int,
    init_index: int,
) -> RungSegment:
    if len(packets) != len(source.decode_times):
        raise TranscodeError(
            f"rung {rung.name}: x264 returned {len(packets)} frames for "
            f"{len(source.decode_times)} source frames"
        )
    try:
        video_config = video_config_from_annexb_header(bytes(encoder.extradata or b""))
        units = [
            AccessUnit(TrackKind.VIDEO, dts, pts, packet.is_keyframe, annexb_to_avcc(bytes(packet)))
            for packet, dts, pts in zip(
                packets, source.decode_times, source.presentation_times, strict=True
            )
        ]
    except H264Error as exc:
        raise TranscodeError(f"rung {rung.name}: x264 output does not parse: {exc}") from exc
    fragments = fragments_from_access_units(
        units, [], video_end_dts=source.video_end, audio_config=None, audio_anchor_dts=None
    )
    if audio is not None:
        fragments.append(audio)
    init = InitSegment(
        init_index,
        init_segment(video_config, source.audio_config),
        video_config,
        source.audio_config,
    )
    return RungSegment(rung, init, media_segment(sequence + 1, fragments), float(source.frame_rate))
