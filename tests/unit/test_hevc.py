"""HEVC SPS / hvcC / codec strings / packaging, checked against streams made by ffmpeg's libx265.

Every clip is encoded once into MP4 (so ffmpeg's muxer writes its own hvcC and ffprobe
reports profile, level and size) and converted to an Annex B elementary stream (what an
MPEG-TS publisher sends), from which our code builds everything itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from media.codecs.h264 import join_avcc, split_annexb, split_avcc
from media.codecs.hevc import (
    PARAMETER_SET_TYPES,
    HevcError,
    NalType,
    build_hvcc,
    is_irap,
    nal_type,
    parse_hvcc,
    parse_sps,
    skipped_leading_pictures,
    video_config_from_hvcc,
)
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.ladder import Rung, rungs_for_source
from media.source_info import describe_source
from media.types import CLOCK_HZ, AccessUnit, TrackKind, VideoCodec, VideoConfig
from packager.transcoding.transcode import EncoderOptions, transcode_segment
from tests.unit.test_segment_packager import decodes_cleanly

# ffprobe's profile names for general_profile_idc (H.265 A.3).
PROFILE_IDC = {"Main": 1, "Main 10": 2, "Rext": 4}
# (chroma_format_idc, bit depth) that each pixel format must come from.
PIXEL_FORMATS = {
    "yuv420p": (1, 8),
    "yuv420p10le": (1, 10),
    "yuv444p": (3, 8),
    "yuv422p10le": (2, 10),
}
# size, frame rate, pixel format, x265 options. x265 codes in 8x8 blocks, so a size that is
# not a multiple of 8 needs the conformance window; its crop unit depends on chroma format.
ENCODINGS = {
    "640x360 Main": ("640x360", 30, "yuv420p", ""),
    "1920x1080 Main at 50 fps": ("1920x1080", 50, "yuv420p", ""),
    "854x480 Main (width cropped from 856)": ("854x480", 25, "yuv420p", ""),
    "426x240 Main 10 (width cropped from 432)": ("426x240", 30, "yuv420p10le", ""),
    "322x180 Rext 4:4:4 (cropped by single columns and rows)": ("322x180", 24, "yuv444p", ""),
    "320x182 Rext 4:2:2 10-bit (height cropped by single rows)": (
        "320x182",
        30,
        "yuv422p10le",
        "",
    ),
    "320x240 with two temporal sub-layers": (
        "320x240",
        30,
        "yuv420p",
        ":temporal-layers=1:bframes=3:b-pyramid=1",
    ),
    "320x240 high tier level 5.1": ("320x240", 30, "yuv420p", ":level-idc=5.1:high-tier=1"),
}
X265_QUIET = "log-level=error"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)


@dataclass(frozen=True)
class Clip:
    mp4: Path  # written by ffmpeg's muxer, with its own hvcC
    annexb: Path  # the same access units as an elementary stream with start codes
    rate: int
    pix_fmt: str


def _encode(
    directory: Path, size: str, rate: int, pix_fmt: str, frames: int, x265: str = X265_QUIET
) -> Clip:
    mp4, annexb = directory / "clip.mp4", directory / "clip.hevc"
    result = _run(
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
        "-frames:v", str(frames), "-pix_fmt", pix_fmt, "-c:v", "libx265", "-preset", "superfast",
        "-x265-params", x265, "-tag:v", "hvc1", "-video_track_timescale", str(CLOCK_HZ), mp4,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = _run(
        "ffmpeg", "-v", "error", "-y", "-i", mp4, "-c", "copy", "-bsf:v", "hevc_mp4toannexb",
        "-f", "hevc", annexb,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Clip(mp4, annexb, rate, pix_fmt)


def _ffprobe_video(path: Path) -> dict:
    result = _run(
        "ffprobe", "-v", "error", "-select_streams", "v", "-show_streams", "-of", "json", path
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["streams"][0]


def _ffmpeg_hvcc(path: Path) -> bytes:
    with av.open(str(path)) as container:
        return bytes(container.streams.video[0].codec_context.extradata)


def _annexb_access_units(path: Path) -> list[list[bytes]]:
    """The NAL units of each access unit, as ffmpeg's HEVC parser splits the stream."""
    with av.open(str(path), format="hevc") as container:
        return [split_annexb(bytes(p)) for p in container.demux(video=0) if p.size]


def _first_parameter_sets(units: list[list[bytes]]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for nalus in units:
        for nal in nalus:
            if nal_type(nal) in PARAMETER_SET_TYPES:
                found.setdefault(nal_type(nal), nal)
    return found


def _our_hvcc(clip: Clip) -> bytes:
    sets = _first_parameter_sets(_annexb_access_units(clip.annexb))
    return build_hvcc([sets[NalType.VPS]], [sets[NalType.SPS]], [sets[NalType.PPS]])


def _hvc1_units(clip: Clip) -> tuple[VideoConfig, list[AccessUnit]]:
    """What an MPEG-TS demuxer hands on: the Annex B access units as length-prefixed NAL
    units without parameter sets or delimiters, keyframes where an IRAP picture is, and
    the timestamps the MP4 carries (an elementary stream has none)."""
    units = _annexb_access_units(clip.annexb)
    with av.open(str(clip.mp4)) as container:
        times = [(p.dts, p.pts) for p in container.demux(video=0) if p.size]
    assert len(times) == len(units)
    config = video_config_from_hvcc(_our_hvcc(clip))
    dropped = (*PARAMETER_SET_TYPES, NalType.AUD)
    access_units = [
        AccessUnit(
            TrackKind.VIDEO,
            dts,
            pts,
            any(is_irap(nal_type(n)) for n in nalus),
            join_avcc([n for n in nalus if nal_type(n) not in dropped]),
        )
        for nalus, (dts, pts) in zip(units, times, strict=True)
    ]
    return config, access_units


def _package(config: VideoConfig, units: list[AccessUnit], target: float) -> list[PackagedSegment]:
    packager = SegmentPackager(target)
    segments = packager.configure(config)
    for unit in units:
        segments += packager.push(unit)
    return segments + packager.flush()


@pytest.fixture(scope="module", params=list(ENCODINGS))
def clip(request, tmp_path_factory) -> Clip:
    size, rate, pix_fmt, options = ENCODINGS[request.param]
    return _encode(
        tmp_path_factory.mktemp("hevc"), size, rate, pix_fmt, frames=4, x265=X265_QUIET + options
    )


# ------------------------------------------------------------------ SPS, hvcC, codec string


def test_sps_size_chroma_depth_and_frame_rate_match_what_ffprobe_reports(clip: Clip) -> None:
    probe = _ffprobe_video(clip.mp4)
    sps = parse_sps(_first_parameter_sets(_annexb_access_units(clip.annexb))[NalType.SPS])
    assert (sps.width, sps.height) == (probe["width"], probe["height"])
    assert probe["pix_fmt"] == clip.pix_fmt
    assert (sps.chroma_format_idc, sps.bit_depth_luma) == PIXEL_FORMATS[clip.pix_fmt]
    assert sps.bit_depth_chroma == sps.bit_depth_luma
    assert sps.profile_idc == PROFILE_IDC[probe["profile"]]
    assert sps.level_idc == probe["level"]
    assert sps.frame_rate == clip.rate


def test_built_hvcc_agrees_with_ffmpegs_field_by_field(clip: Clip) -> None:
    ours, theirs = parse_hvcc(_our_hvcc(clip)), parse_hvcc(_ffmpeg_hvcc(clip.mp4))
    for name in (
        "profile_space",
        "tier_flag",
        "profile_idc",
        "profile_compatibility_flags",
        "constraint_indicator_flags",
        "level_idc",
        "chroma_format_idc",
        "bit_depth_luma",
        "bit_depth_chroma",
        "num_temporal_layers",
        "temporal_id_nested",
        "nal_length_size",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.nal_length_size == 4
    for kind in PARAMETER_SET_TYPES:
        assert ours.nal_units(kind) == theirs.nal_units(kind), kind.name
    # hvc1: every parameter set is in the record, none in the samples (array_completeness 1).
    assert [(kind, complete) for kind, complete, _ in ours.arrays] == [
        (NalType.VPS, True),
        (NalType.SPS, True),
        (NalType.PPS, True),
    ]


def _independent_codec_string(hvcc: bytes, probe: dict) -> str:
    """14496-15 E.3 spelled out again, from ffmpeg's record and ffprobe's profile and level."""
    assert hvcc[1] >> 6 == 0  # profile space 0: the only one x265 writes
    tier = "H" if hvcc[1] & 0x20 else "L"
    compatibility = int.from_bytes(hvcc[2:6], "big")
    reversed_flags = sum(1 << bit for bit in range(32) if compatibility & (1 << (31 - bit)))
    constraint_bytes = list(hvcc[6:12])
    while constraint_bytes and constraint_bytes[-1] == 0:
        constraint_bytes.pop()
    return ".".join(
        [
            f"hvc1.{PROFILE_IDC[probe['profile']]}",
            format(reversed_flags, "X"),
            f"{tier}{probe['level']}",
            *(format(byte, "X") for byte in constraint_bytes),
        ]
    )


def test_codec_string_matches_one_derived_independently(clip: Clip) -> None:
    probe = _ffprobe_video(clip.mp4)
    config = video_config_from_hvcc(_our_hvcc(clip))
    assert config.codec is VideoCodec.HEVC
    assert config.codec_string == _independent_codec_string(_ffmpeg_hvcc(clip.mp4), probe)
    assert (config.width, config.height) == (probe["width"], probe["height"])
    # ffmpeg's record (which may also carry an SEI array) describes the same stream.
    assert video_config_from_hvcc(_ffmpeg_hvcc(clip.mp4)).codec_string == config.codec_string


def test_source_description_names_profile_and_level_as_ffprobe_does(clip: Clip) -> None:
    probe = _ffprobe_video(clip.mp4)
    video = describe_source(video_config_from_hvcc(_our_hvcc(clip)), None, {})["video"]
    assert video["codec"] == "hevc"
    assert video["profile"] == probe["profile"]
    assert video["level"] == round(probe["level"] / 30, 1)
    assert (video["width"], video["height"]) == (probe["width"], probe["height"])
    assert video["frame_rate"] == clip.rate


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # 14496-15 E.5's example: Main, Main tier, level 3.1, progressive frame-only.
        ((0, 0, 1, 0x6000_0000, 0xB000_0000_0000, 93), "hvc1.1.6.L93.B0"),
        # Main 10 at high tier 4: compatible with Main 10 only.
        ((0, 1, 2, 0x2000_0000, 0xB000_0000_0000, 120), "hvc1.2.4.H120.B0"),
        # A profile space letter, and a zero constraint byte kept before a non-zero one.
        ((1, 0, 4, 0x0800_0000, 0x9000_0800_0000, 153), "hvc1.A4.10.L153.90.0.8"),
        # No constraint flags at all: nothing after the level.
        ((0, 0, 1, 0x4000_0000, 0, 63), "hvc1.1.2.L63"),
    ],
)
def test_codec_string_follows_14496_15_annex_e(fields: tuple[int, ...], expected: str) -> None:
    space, tier, profile, compatibility, constraints, level = fields
    header = bytes([1, space << 6 | tier << 5 | profile])
    header += compatibility.to_bytes(4, "big") + constraints.to_bytes(6, "big") + bytes([level])
    record = header + bytes.fromhex("f000fcfdf8f800000f00")  # no arrays
    assert parse_hvcc(record).codec_string == expected


# ------------------------------------------------------------------ packaging and transcoding


@pytest.fixture(scope="module")
def open_gop_clip(tmp_path_factory) -> Clip:
    """4 s at 30 fps with a keyframe every second and x265's default open GOPs: the GOPs
    after the first open on a CRA followed by RASL pictures."""
    return _encode(
        tmp_path_factory.mktemp("hevc_gop"), "426x240", 30, "yuv420p", frames=120,
        x265=f"{X265_QUIET}:keyint=30:min-keyint=30:scenecut=0",
    )  # fmt: skip


@pytest.fixture(scope="module")
def open_gop_segments(open_gop_clip: Clip) -> list[PackagedSegment]:
    return _package(*_hvc1_units(open_gop_clip), target=1.0)


def _write_concatenated(path: Path, segments: list[PackagedSegment]) -> Path:
    path.write_bytes(segments[0].init.data + b"".join(s.data for s in segments))
    return path


def _decoded(path: Path) -> tuple[str, dict]:
    """What ffmpeg prints decoding the file at -v error, and ffprobe's video stream after
    counting the frames it decodes (nb_read_frames)."""
    decoded = _run("ffmpeg", "-v", "error", "-i", path, "-f", "null", "-")
    counted = _run(
        "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_streams",
        "-of", "json", path,
    )  # fmt: skip
    assert counted.returncode == 0, counted.stderr
    return decoded.stderr.strip(), json.loads(counted.stdout)["streams"][0]


def test_annexb_hevc_packaged_by_the_live_packager_decodes_every_frame(
    open_gop_clip: Clip, open_gop_segments: list[PackagedSegment], tmp_path: Path
) -> None:
    config, units = _hvc1_units(open_gop_clip)
    assert [u.keyframe for u in units].count(True) == 4
    init = open_gop_segments[0].init
    assert init.codecs == config.codec_string
    assert b"hvcC" + config.record in init.data
    errors, stream = _decoded(_write_concatenated(tmp_path / "all.mp4", open_gop_segments))
    assert errors == ""
    assert (stream["codec_name"], stream["codec_tag_string"]) == ("hevc", "hvc1")
    # Nothing lost between the Annex B stream and our segments.
    assert int(stream["nb_read_frames"]) == len(units) == 120


def test_open_gop_segments_are_cut_at_every_keyframe_from_the_first(
    open_gop_segments: list[PackagedSegment],
) -> None:
    # x265 decodes its first IDR a frame earlier (relative to its pts) than the CRAs after
    # it, so the first GOP is a frame short in dts; cutting by dts alone would make the
    # first segment two GOPs long.
    durations = [s.duration_ticks for s in open_gop_segments]
    assert len(durations) == 4  # one per keyframe
    assert all(abs(d - CLOCK_HZ) <= CLOCK_HZ // 30 for d in durations[:-1])


def test_every_segment_opens_on_an_irap_picture(open_gop_segments: list[PackagedSegment]) -> None:
    for segment in open_gop_segments:
        with av.open(io.BytesIO(segment.init.data + segment.data), format="mp4") as container:
            first = next(p for p in container.demux(video=0) if p.size)
        assert first.is_keyframe
        assert any(is_irap(nal_type(n)) for n in split_avcc(bytes(first)))


def _decoded_alone(segment: PackagedSegment) -> int:
    with av.open(io.BytesIO(segment.init.data + segment.data), format="mp4") as container:
        return sum(1 for _ in container.decode(video=0))


def _samples(segment: PackagedSegment) -> list[bytes]:
    with av.open(io.BytesIO(segment.init.data + segment.data), format="mp4") as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_skipped_leading_pictures_counts_what_a_decoder_starting_there_drops(
    open_gop_segments: list[PackagedSegment],
) -> None:
    skipped = []
    for segment in open_gop_segments:
        samples = _samples(segment)
        skipped.append(skipped_leading_pictures(samples))
        assert _decoded_alone(segment) == len(samples) - skipped[-1]
    assert skipped[0] == 0  # the stream's first picture is an IDR
    assert all(count > 0 for count in skipped[1:])  # the others open on a CRA with RASL


def _transcoded(segments: list[PackagedSegment], rung: Rung) -> bytes:
    """One rung of every segment, as one fragmented MP4 (init + media segments)."""
    video = segments[0].init.video
    [fitted] = rungs_for_source([rung], video.width, video.height)
    outputs = []
    for segment in segments:
        [output] = transcode_segment(
            segment.init.data,
            segment.data,
            [fitted],
            sequence=segment.sequence,
            init_index=0,
            options=EncoderOptions(),
        )
        assert output.init.codecs.startswith("avc1.64")
        assert (output.init.video.width, output.init.video.height) == (fitted.width, 180)
        assert len(_samples_of(output.init.data, output.data)) == len(_samples(segment))
        outputs.append(output)
    return outputs[0].init.data + b"".join(o.data for o in outputs)


def _samples_of(init: bytes, data: bytes) -> list[av.Packet]:
    with av.open(io.BytesIO(init + data), format="mp4") as container:
        return [p for p in container.demux(video=0) if p.size]


def test_open_gop_hevc_segments_transcode_into_h264_rungs_with_every_frame(
    open_gop_segments: list[PackagedSegment], tmp_path: Path
) -> None:
    path = tmp_path / "rung.mp4"
    path.write_bytes(_transcoded(open_gop_segments, Rung("180p", 180, 300_000)))
    errors, stream = _decoded(path)
    assert errors == ""
    assert (stream["codec_name"], stream["profile"], stream["pix_fmt"]) == (
        "h264",
        "High",
        "yuv420p",
    )
    assert int(stream["nb_read_frames"]) == 120


def test_a_main_10_hevc_segment_transcodes_into_8_bit_h264(tmp_path: Path) -> None:
    size, rate, pix_fmt, _ = ENCODINGS["426x240 Main 10 (width cropped from 432)"]
    clip = _encode(tmp_path, size, rate, pix_fmt, frames=10)
    segments = _package(*_hvc1_units(clip), target=1.0)
    path = tmp_path / "rung.mp4"
    path.write_bytes(_transcoded(segments, Rung("180p", 180, 300_000)))
    errors, stream = _decoded(path)
    assert errors == ""
    assert (stream["codec_name"], stream["pix_fmt"], int(stream["nb_read_frames"])) == (
        "h264",
        "yuv420p",
        10,
    )


def test_new_parameter_sets_mid_stream_start_a_new_init_that_decodes(
    open_gop_clip: Clip, tmp_path: Path
) -> None:
    """An encoder restarting at another size: the packager closes the segment, writes a
    second init (EXT-X-MAP) and flags a discontinuity; the playlist decodes throughout."""
    first_config, first_units = _hvc1_units(open_gop_clip)
    second_config, second_units = _hvc1_units(
        _encode(tmp_path, "640x360", 30, "yuv420p10le", frames=30)
    )
    packager = SegmentPackager(1.0)
    segments = packager.configure(first_config)
    for unit in first_units:
        segments += packager.push(unit)
    assert packager.configure(first_config) == []  # the same parameter sets again: no change
    segments += packager.configure(second_config)
    for unit in second_units:
        segments += packager.push(unit)
    segments += packager.flush()

    assert [s.init.index for s in segments] == [0, 0, 0, 0, 1]
    assert [s.discontinuity for s in segments] == [False] * 4 + [True]
    assert segments[-1].init.video == second_config
    assert segments[-1].init.codecs == second_config.codec_string != first_config.codec_string
    assert decodes_cleanly(tmp_path, segments) == ""


# ------------------------------------------------------------------ bad input


def test_nal_header_and_irap_ranges() -> None:
    assert nal_type(b"\x40\x01") == NalType.VPS
    assert nal_type(b"\x42\x01\x01") == NalType.SPS
    assert nal_type(b"\x26\x01") == NalType.IDR_W_RADL
    assert [t for t in range(64) if is_irap(t)] == list(range(16, 24))
    with pytest.raises(HevcError, match="2-byte header"):
        nal_type(b"\x40")
    with pytest.raises(HevcError, match="forbidden_zero_bit"):
        nal_type(b"\xc0\x01")


def test_every_truncation_of_a_real_hvcc_is_refused(tmp_path: Path) -> None:
    record = _our_hvcc(_encode(tmp_path, "640x360", 30, "yuv420p", frames=1))
    assert video_config_from_hvcc(record).width == 640
    for end in range(len(record)):
        with pytest.raises(HevcError):
            video_config_from_hvcc(record[:end])
    with pytest.raises(HevcError, match="after its last array"):
        parse_hvcc(record + b"\x00")


def test_a_truncated_sps_is_refused_or_loses_only_its_frame_rate(tmp_path: Path) -> None:
    clip = _encode(tmp_path, "854x480", 25, "yuv420p", frames=1)
    sps = _first_parameter_sets(_annexb_access_units(clip.annexb))[NalType.SPS]
    outcomes: set[str | float | None] = set()
    for end in range(len(sps)):
        try:
            parsed = parse_sps(sps[:end])
        except HevcError:
            outcomes.add("refused")
            continue
        # Only the VUI may be cut short: the size stays right, the frame rate is right or None.
        assert (parsed.width, parsed.height) == (854, 480)
        outcomes.add(parsed.frame_rate)
    assert outcomes == {"refused", None, 25.0}


def test_build_hvcc_refuses_missing_or_misplaced_parameter_sets(open_gop_clip: Clip) -> None:
    sets = _first_parameter_sets(_annexb_access_units(open_gop_clip.annexb))
    vps, sps, pps = sets[NalType.VPS], sets[NalType.SPS], sets[NalType.PPS]
    with pytest.raises(HevcError, match="at least one VPS"):
        build_hvcc([], [sps], [pps])
    with pytest.raises(HevcError, match="SPS array got NAL unit type 34"):
        build_hvcc([vps], [pps], [pps])
    with pytest.raises(HevcError, match="expected an HEVC SPS"):
        parse_sps(pps)


@given(st.binary(max_size=200))
@example(b"\x42\x01\x01\x01\x60" + bytes(40))
@example(bytes.fromhex("0101600000009000000000003ff000fcfdf8f800000f01a10001000342010f"))
def test_arbitrary_bytes_raise_only_hevc_error(data: bytes) -> None:
    for parse in (parse_sps, lambda d: parse_sps(b"\x42\x01" + d), video_config_from_hvcc):
        with contextlib.suppress(HevcError):
            parse(data)
