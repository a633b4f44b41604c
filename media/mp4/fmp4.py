"""Fragmented MP4 (CMAF-style) writer for HLS: the init segment and .m4s media segments.

Sans-IO: functions take media and return bytes; every bad input raises ``Fmp4Error``.

Track layout is fixed so that every rendition of a stream agrees: video is track 1 on a
90 kHz timescale (the same clock as ``AccessUnit``, so video times need no conversion) and
audio is track 2 on a timescale equal to its sample rate (so each AAC frame lasts exactly
``AudioConfig.frame_samples`` ticks: 1024, or 2048 for explicitly signalled HE-AAC).

A media segment is ``styp`` + ``moof`` + ``mdat``. An LL-HLS part is the same thing without
``styp`` (``media_segment(..., with_styp=False)``), so a full segment can also be served as
the concatenation of its parts. ``mfhd`` sequence numbers must increase from one ``moof`` to
the next within a track's presentation, so when parts are used number the parts, not the
segments.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from media.mp4.boxes import (
    UNITY_MATRIX,
    Fmp4Error,
    box,
    descriptor,
    full_box,
    language_code,
)
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind, VideoCodec, VideoConfig

__all__ = [
    "AAC_FRAME_SAMPLES",
    "AUDIO_TRACK_ID",
    "SAMPLE_FLAGS_NON_SYNC",
    "SAMPLE_FLAGS_SYNC",
    "VIDEO_TIMESCALE",
    "VIDEO_TRACK_ID",
    "Fmp4Error",
    "Sample",
    "TrackFragment",
    "fragments_from_access_units",
    "init_segment",
    "media_segment",
]

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
VIDEO_TIMESCALE = CLOCK_HZ
AAC_FRAME_SAMPLES = 1024  # AAC-LC frames, and HE-AAC's at its core rate

# ISO/IEC 14496-12 8.8.3.1 sample flags.
SAMPLE_FLAGS_SYNC = 0x0200_0000  # sample_depends_on=2: an I picture / independent sample
SAMPLE_FLAGS_NON_SYNC = 0x0101_0000  # sample_depends_on=1 and sample_is_non_sync_sample=1

# Used only when a lone video frame has neither a successor nor an end time.
FALLBACK_VIDEO_FRAME_DURATION = CLOCK_HZ // 30

_MOVIE_TIMESCALE = 1000
_UND = language_code("und")

_TFHD_DEFAULT_BASE_IS_MOOF = 0x02_0000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200
_TRUN_SAMPLE_FLAGS = 0x000400
_TRUN_SAMPLE_CTO = 0x000800

_MFHD_SIZE = 16
_TRAF_FIXED_SIZE = 8 + 16 + 20 + 20  # traf header, tfhd, tfdt v1, trun header with data offset
_MDAT_HEADER_SIZE = 8

# Sample entry and configuration box per codec, with the smallest valid record (version 1).
_VIDEO_SAMPLE_ENTRIES = {
    VideoCodec.H264: (b"avc1", b"avcC", 7),
    VideoCodec.HEVC: (b"hvc1", b"hvcC", 23),
}

_STYP_BRANDS = (b"msdh",)
_STYP_SINGLE_TRACK_BRANDS = (b"msdh", b"cmfs")


@dataclass(frozen=True, slots=True)
class Sample:
    """One coded frame in a track fragment, with times in the track's timescale."""

    data: bytes | bytearray | memoryview
    duration: int
    sync: bool = True
    composition_offset: int = 0  # pts - dts; signed (trun version 1)

    @property
    def flags(self) -> int:
        return SAMPLE_FLAGS_SYNC if self.sync else SAMPLE_FLAGS_NON_SYNC


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """The samples of one track inside one moof, in decode order."""

    track_id: int
    base_media_decode_time: int
    samples: Sequence[Sample]

    @property
    def end_decode_time(self) -> int:
        """Decode time just after the last sample: the next fragment's base for continuity."""
        return self.base_media_decode_time + sum(s.duration for s in self.samples)


# --------------------------------------------------------------------------- init segment


def init_segment(video: VideoConfig | None, audio: AudioConfig | None) -> bytes:
    """The EXT-X-MAP initialization segment: ftyp + moov describing the present tracks."""
    if video is None and audio is None:
        raise Fmp4Error("an init segment needs at least one of video or audio, got neither")
    traks: list[bytes] = []
    trexs: list[bytes] = []
    if video is not None:
        traks.append(_video_trak(video))
        trexs.append(_trex(VIDEO_TRACK_ID))
    if audio is not None:
        traks.append(_audio_trak(audio))
        trexs.append(_trex(AUDIO_TRACK_ID))
    # cmfc promises one track per file; a muxed (audio+video) init only claims ISO BMFF.
    brands = [b"iso6", b"mp41"] + ([b"cmfc"] if len(traks) == 1 else [])
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), *brands)
    moov = box(b"moov", _mvhd(next_track_id=AUDIO_TRACK_ID + 1), *traks, box(b"mvex", *trexs))
    return ftyp + moov


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIHH8x", 0, 0, _MOVIE_TIMESCALE, 0, 0x0001_0000, 0x0100, 0),
        UNITY_MATRIX,
        bytes(24),  # pre_defined
        struct.pack(">I", next_track_id),
    )


def _tkhd(track_id: int, *, volume: int, width: int, height: int) -> bytes:
    # flags: track_enabled | track_in_movie
    return full_box(
        b"tkhd",
        0,
        0x000003,
        struct.pack(">IIIII8xhhHH", 0, 0, track_id, 0, 0, 0, 0, volume, 0),
        UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )


def _mdia(
    timescale: int, handler: bytes, handler_name: bytes, media_header: bytes, sample_entry: bytes
) -> bytes:
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, _UND, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, handler), handler_name + b"\0")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    return box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl))


def _video_trak(video: VideoConfig) -> bytes:
    if not (0 < video.width <= 0xFFFF and 0 < video.height <= 0xFFFF):
        raise Fmp4Error(f"video size must be 1..65535 each, got {video.width}x{video.height}")
    entry, config_box, min_record_size = _VIDEO_SAMPLE_ENTRIES[video.codec]
    if len(video.record) < min_record_size or video.record[0] != 1:
        raise Fmp4Error(
            f"{video.codec} record is not a {config_box.decode()} record: {video.record[:8]!r}"
        )
    sample_entry = box(
        entry,
        struct.pack(
            ">6xH16xHHIIIH32xHh",
            1,
            video.width,
            video.height,
            0x0048_0000,
            0x0048_0000,
            0,
            1,
            0x0018,
            -1,
        ),
        box(config_box, video.record),
    )
    vmhd = full_box(b"vmhd", 0, 1, struct.pack(">HHHH", 0, 0, 0, 0))
    return box(
        b"trak",
        _tkhd(VIDEO_TRACK_ID, volume=0, width=video.width, height=video.height),
        _mdia(VIDEO_TIMESCALE, b"vide", b"VideoHandler", vmhd, sample_entry),
    )


def _audio_trak(audio: AudioConfig) -> bytes:
    if not 0 < audio.sample_rate < 1 << 32:
        raise Fmp4Error(f"audio sample rate must be positive, got {audio.sample_rate}")
    if not audio.asc:
        raise Fmp4Error("audio AudioSpecificConfig is empty")
    # channel_configuration 0 (layout in a PCE) still decodes from the ASC; 2 is the convention.
    channels = audio.channels if 0 < audio.channels <= 0xFFFF else 2
    # AudioSampleEntry v0 holds the rate as 16.16; above 65535 Hz the mdhd timescale and the
    # ASC carry it and the field is left 0.
    rate_field = audio.sample_rate << 16 if audio.sample_rate <= 0xFFFF else 0
    es = descriptor(
        0x03,  # ES_Descriptor
        struct.pack(">HB", AUDIO_TRACK_ID, 0),
        descriptor(
            0x04,  # DecoderConfigDescriptor: MPEG-4 Audio (0x40), AudioStream (5) << 2 | 1
            struct.pack(">BB3sII", 0x40, 0x15, bytes(3), 0, 0),
            descriptor(0x05, audio.asc),  # DecoderSpecificInfo = AudioSpecificConfig
        ),
        descriptor(0x06, b"\x02"),  # SLConfigDescriptor, predefined = MP4
    )
    mp4a = box(
        b"mp4a",
        struct.pack(">6xH8xHHHHI", 1, channels, 16, 0, 0, rate_field),
        full_box(b"esds", 0, 0, es),
    )
    smhd = full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))
    return box(
        b"trak",
        _tkhd(AUDIO_TRACK_ID, volume=0x0100, width=0, height=0),
        _mdia(audio.sample_rate, b"soun", b"SoundHandler", smhd, mp4a),
    )


def _trex(track_id: int) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, 0, 0, 0))


# --------------------------------------------------------------------------- media segment


def media_segment(
    sequence_number: int, fragments: Sequence[TrackFragment], *, with_styp: bool = True
) -> bytes:
    """One moof (a traf per fragment) and one mdat holding the samples, track after track.

    ``with_styp=False`` gives an LL-HLS part (or a chunk to append to a segment in progress).
    The sample payloads are copied exactly once, into the returned bytes.
    """
    if not 0 <= sequence_number <= 0xFFFF_FFFF:
        raise Fmp4Error(f"sequence_number must fit 32 bits, got {sequence_number}")
    if not fragments:
        raise Fmp4Error("a media segment needs at least one track fragment")
    track_ids = [f.track_id for f in fragments]
    if len(set(track_ids)) != len(track_ids):
        raise Fmp4Error(f"track ids must be unique within a moof, got {track_ids}")

    layouts = [_traf_layout(f) for f in fragments]
    moof_size = 8 + _MFHD_SIZE + sum(size for size, _, _ in layouts)
    brands = _STYP_SINGLE_TRACK_BRANDS if len(fragments) == 1 else _STYP_BRANDS
    styp_size = 16 + 4 * len(brands) if with_styp else 0
    payloads = [s.data for f in fragments for s in f.samples]
    mdat_size = _MDAT_HEADER_SIZE + sum(len(p) for p in payloads)
    if mdat_size > 0xFFFF_FFFF:
        raise Fmp4Error(f"mdat of {mdat_size} bytes is over the 4 GiB a 32-bit size allows")

    header = bytearray(styp_size + moof_size + _MDAT_HEADER_SIZE)
    pos = 0
    if with_styp:
        struct.pack_into(
            f">I4s4sI{len(brands) * 4}s",
            header,
            0,
            styp_size,
            b"styp",
            brands[0],
            0,
            b"".join(brands),
        )
        pos = styp_size
    moof_start = pos
    struct.pack_into(
        ">I4sI4sII", header, pos, moof_size, b"moof", _MFHD_SIZE, b"mfhd", 0, sequence_number
    )
    pos += 8 + _MFHD_SIZE
    data_offset = moof_size + _MDAT_HEADER_SIZE  # from the moof's first byte (default-base-is-moof)
    for fragment, (traf_size, trun_flags, table) in zip(fragments, layouts, strict=True):
        trun_size = traf_size - (_TRAF_FIXED_SIZE - 20)
        struct.pack_into(
            ">I4sI4sIII4sIQI4sIIi",
            header,
            pos,
            traf_size,
            b"traf",
            16,
            b"tfhd",
            _TFHD_DEFAULT_BASE_IS_MOOF,
            fragment.track_id,
            20,
            b"tfdt",
            1 << 24,
            fragment.base_media_decode_time,
            trun_size,
            b"trun",
            1 << 24 | trun_flags,
            len(fragment.samples),
            data_offset,
        )
        pos += _TRAF_FIXED_SIZE
        header[pos : pos + len(table)] = table
        pos += len(table)
        data_offset += sum(len(s.data) for s in fragment.samples)
    assert pos - moof_start == moof_size
    struct.pack_into(">I4s", header, pos, mdat_size, b"mdat")
    return b"".join((header, *payloads))


def _traf_layout(fragment: TrackFragment) -> tuple[int, int, bytes]:
    """Size of the traf, the trun flags and the packed per-sample table."""
    samples = fragment.samples
    if not samples:
        raise Fmp4Error(f"track {fragment.track_id}: a track fragment needs at least one sample")
    if not 0 < fragment.track_id <= 0xFFFF_FFFF:
        raise Fmp4Error(f"track_id must be 1..2**32-1, got {fragment.track_id}")
    if not 0 <= fragment.base_media_decode_time < 1 << 64:
        raise Fmp4Error(
            f"track {fragment.track_id}: base_media_decode_time must be 0..2**64-1, "
            f"got {fragment.base_media_decode_time}"
        )
    flags = _TRUN_DATA_OFFSET | _TRUN_SAMPLE_DURATION | _TRUN_SAMPLE_SIZE | _TRUN_SAMPLE_FLAGS
    try:
        if any(s.composition_offset for s in samples):
            flags |= _TRUN_SAMPLE_CTO
            values = [
                v for s in samples for v in (s.duration, len(s.data), s.flags, s.composition_offset)
            ]
            table = struct.pack(">" + "IIIi" * len(samples), *values)
        else:
            values = [v for s in samples for v in (s.duration, len(s.data), s.flags)]
            table = struct.pack(f">{len(values)}I", *values)
    except struct.error as exc:
        raise Fmp4Error(
            f"track {fragment.track_id}: a sample duration, size or composition offset is out "
            f"of range (durations {min(s.duration for s in samples)}.."
            f"{max(s.duration for s in samples)}, offsets "
            f"{min(s.composition_offset for s in samples)}.."
            f"{max(s.composition_offset for s in samples)}): {exc}"
        ) from None
    return _TRAF_FIXED_SIZE + len(table), flags, table


# --------------------------------------------------------------------------- access units


def fragments_from_access_units(
    video_aus: Sequence[AccessUnit],
    audio_aus: Sequence[AccessUnit],
    *,
    video_end_dts: int | None,
    audio_config: AudioConfig | None,
    audio_anchor_dts: int | None,
) -> list[TrackFragment]:
    """Turn one segment's (or part's) 90 kHz access units into track fragments.

    Video (track 1, 90 kHz): base = first dts; each duration is the gap to the next dts; the
    last frame lasts until ``video_end_dts`` (the dts of the first frame of the next segment,
    when known) or else as long as the frame before it; composition offset = pts - dts.

    Audio (track 2, sample-rate timescale): every AAC frame lasts ``frame_samples`` samples
    of the config (1024; 2048 for explicit HE-AAC, whose rate is SBR's output rate). Decode
    times sit on a grid of such frames anchored at ``audio_anchor_dts``: the grid origin is
    ``round(audio_anchor_dts * rate / 90000)`` and a fragment starts on the grid frame nearest
    its first access unit's dts. Because the start is a pure function of (anchor, dts), a
    caller keeps segments (and parts, and every rung of the ladder) gap- and overlap-free
    without carrying any other state: pass the same anchor, normally the dts of the first
    audio access unit of the session (again after an EXT-X-DISCONTINUITY), for every call.
    Timestamp jitter of up to half a frame (~10 ms at 48 kHz; FLV's millisecond rounding is
    far less) is absorbed. A hole in the audio of one or more whole frames is kept as a hole,
    so audio stays in sync with video. ``None`` anchors at this call's first audio unit, which
    is only right for the first segment of a session.

    Tracks without access units are left out of the result.
    """
    fragments: list[TrackFragment] = []
    if video_aus:
        fragments.append(_video_fragment(video_aus, video_end_dts))
    if audio_aus:
        if audio_config is None:
            raise Fmp4Error("audio access units were given without an audio_config")
        anchor = audio_aus[0].dts if audio_anchor_dts is None else audio_anchor_dts
        fragments.append(
            _audio_fragment(audio_aus, audio_config.sample_rate, audio_config.frame_samples, anchor)
        )
    return fragments


def _check_kind(aus: Sequence[AccessUnit], kind: TrackKind) -> None:
    for au in aus:
        if au.kind is not kind:
            raise Fmp4Error(f"expected {kind.value} access units, got a {au.kind.value} one")


def _video_fragment(aus: Sequence[AccessUnit], end_dts: int | None) -> TrackFragment:
    _check_kind(aus, TrackKind.VIDEO)
    dts = [au.dts for au in aus]
    durations = [b - a for a, b in pairwise(dts)]
    if end_dts is not None:
        durations.append(end_dts - dts[-1])
    else:
        durations.append(durations[-1] if durations else FALLBACK_VIDEO_FRAME_DURATION)
    if min(durations) <= 0:
        i = min(range(len(durations)), key=durations.__getitem__)
        nxt = dts[i + 1] if i + 1 < len(dts) else end_dts
        raise Fmp4Error(f"video dts must increase: frame {i} has dts {dts[i]}, next is {nxt}")
    if dts[0] < 0:
        raise Fmp4Error(f"video dts must not be negative, first is {dts[0]}")
    samples = [
        Sample(au.data, duration, au.keyframe, au.pts - au.dts)
        for au, duration in zip(aus, durations, strict=True)
    ]
    return TrackFragment(VIDEO_TRACK_ID, dts[0], samples)


def _round_div(num: int, den: int) -> int:
    """num / den rounded half up, exactly, for positive den."""
    return (2 * num + den) // (2 * den)


def _audio_fragment(
    aus: Sequence[AccessUnit], rate: int, frame: int, anchor_dts: int
) -> TrackFragment:
    _check_kind(aus, TrackKind.AUDIO)
    if rate <= 0 or frame <= 0:
        raise Fmp4Error(f"audio rate and frame samples must be positive, got {rate}, {frame}")
    origin = _round_div(anchor_dts * rate, CLOCK_HZ)
    frame_ticks = CLOCK_HZ * frame

    def grid_time(dts: int) -> int:
        return origin + frame * _round_div((dts - anchor_dts) * rate, frame_ticks)

    times = [grid_time(aus[0].dts)]
    for au in aus[1:]:
        expected = times[-1] + frame
        on_grid = grid_time(au.dts)
        # Only a whole missing frame moves the timeline; smaller disagreements are jitter.
        times.append(on_grid if on_grid > expected else expected)
    if times[0] < 0:
        raise Fmp4Error(
            f"audio dts {aus[0].dts} is before 0 on the timeline anchored at dts {anchor_dts}"
        )
    durations = [b - a for a, b in pairwise(times)] + [frame]
    samples = [Sample(au.data, d) for au, d in zip(aus, durations, strict=True)]
    return TrackFragment(AUDIO_TRACK_ID, times[0], samples)
