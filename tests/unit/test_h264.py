"""H.264 SPS / avcC / NAL framing, checked against streams encoded by ffmpeg's libx264."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codecs.h264 import (
    BitReader,
    H264Error,
    NalType,
    annexb_to_avcc,
    build_avcc,
    is_idr,
    join_avcc,
    nal_types,
    parse_avcc,
    parse_sps,
    split_annexb,
    split_avcc,
    unescape_rbsp,
    video_config_from_avcc,
)
from media.types import VideoCodec

PROFILE_IDC = {
    "Constrained Baseline": 66,
    "Main": 77,
    "High": 100,
    "High 4:2:2": 122,
    "High 4:4:4 Predictive": 244,
}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _ffprobe_video(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_streams", "-of", "json", path],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)["streams"][0]


def _encode(path: Path, size: str, rate: int, *codec_args: str) -> Path:
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-frames:v", "12",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "superfast", *codec_args, str(path),
    )  # fmt: skip
    return path


def _extradata(path: Path) -> bytes:
    with av.open(str(path)) as container:
        return bytes(container.streams.video[0].codec_context.extradata)


ENCODINGS = {
    "1080p high (cropped from 1088)": ("1920x1080", 30, ["-profile:v", "high"]),
    "720p main": ("1280x720", 30, ["-profile:v", "main"]),
    "854x480 (width cropped from 864)": ("854x480", 30, []),
    "640x360 baseline": ("640x360", 30, ["-profile:v", "baseline"]),
    "odd 641x361 in 4:4:4": ("641x361", 25, ["-pix_fmt", "yuv444p", "-profile:v", "high444"]),
    "640x358 in 4:2:2": ("640x358", 50, ["-pix_fmt", "yuv422p", "-profile:v", "high422"]),
    "interlaced 1080i": ("1920x1080", 25, ["-flags", "+ildct+ilme"]),
}


@pytest.fixture(scope="module", params=list(ENCODINGS))
def encoded(request, tmp_path_factory) -> tuple[str, int, Path]:
    size, rate, args = ENCODINGS[request.param]
    path = _encode(tmp_path_factory.mktemp("h264") / "clip.mp4", size, rate, *args)
    return size, rate, path


def test_sps_size_profile_level_and_frame_rate_match_what_ffprobe_reports(encoded):
    size, rate, path = encoded
    probe = _ffprobe_video(path)
    config = video_config_from_avcc(_extradata(path))
    record = parse_avcc(config.record)
    sps = parse_sps(record.sps[0])

    assert config.codec is VideoCodec.H264
    assert f"{config.width}x{config.height}" == size
    assert (sps.width, sps.height) == (probe["width"], probe["height"])
    assert record.profile_idc == sps.profile_idc == PROFILE_IDC[probe["profile"]]
    assert record.level_idc == sps.level_idc == probe["level"]
    assert (
        config.codec_string
        == f"avc1.{sps.profile_idc:02x}{record.constraint_flags:02x}{sps.level_idc:02x}"
    )
    assert sps.frame_rate == rate


def test_interlaced_stream_reads_as_field_coded_with_full_frame_height(tmp_path):
    path = _encode(tmp_path / "i.mp4", "1920x1080", 25, "-flags", "+ildct+ilme")
    sps = parse_sps(parse_avcc(_extradata(path)).sps[0])
    assert not sps.frame_mbs_only
    assert (sps.width, sps.height) == (1920, 1080)


def test_high_444_stream_reports_chroma_format_3(tmp_path):
    path = _encode(tmp_path / "x.mp4", "320x240", 30, "-pix_fmt", "yuv444p")
    assert parse_sps(parse_avcc(_extradata(path)).sps[0]).chroma_format_idc == 3


def test_codec_string_is_built_from_the_avcc_record(tmp_path):
    path = _encode(tmp_path / "h.mp4", "1920x1080", 30, "-profile:v", "high", "-level", "4.1")
    assert video_config_from_avcc(_extradata(path)).codec_string == "avc1.640029"


@pytest.fixture(scope="module")
def annexb_clip(tmp_path_factory) -> tuple[bytes, bytes, list[bytes]]:
    """A raw Annex B stream, the avcC ffmpeg makes for it, and its access units."""
    folder = tmp_path_factory.mktemp("annexb")
    raw = _encode(folder / "clip.h264", "854x480", 30, "-bf", "2", "-g", "6")
    _ffmpeg("-i", str(raw), "-c", "copy", str(folder / "clip.mp4"))
    with av.open(str(raw)) as container:
        access_units = [bytes(p) for p in container.demux(video=0) if p.size]
    return raw.read_bytes(), _extradata(folder / "clip.mp4"), access_units


def test_avcc_built_from_annexb_parameter_sets_matches_ffmpeg_and_decodes(annexb_clip):
    stream, ffmpeg_avcc, access_units = annexb_clip
    nalus = split_annexb(stream)
    # x264 repeats SPS and PPS before every IDR when it writes a raw stream, as TS carries it
    sps = list(dict.fromkeys(n for n in nalus if n[0] & 0x1F == NalType.SPS))
    pps = list(dict.fromkeys(n for n in nalus if n[0] & 0x1F == NalType.PPS))

    built = build_avcc(sps, pps)

    ours, theirs = parse_avcc(built), parse_avcc(ffmpeg_avcc)
    assert (ours.sps, ours.pps, ours.nal_length_size) == (theirs.sps, theirs.pps, 4)
    assert (
        video_config_from_avcc(built).codec_string
        == video_config_from_avcc(ffmpeg_avcc).codec_string
    )
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = built
    frames = []
    for unit in access_units:
        frames += decoder.decode(av.Packet(annexb_to_avcc(unit)))
    frames += decoder.decode(None)
    assert len(frames) == len(access_units) == 12
    assert {(f.width, f.height) for f in frames} == {(854, 480)}


def test_annexb_to_avcc_keeps_every_nal_unit_and_drops_start_codes(annexb_clip):
    _, _, access_units = annexb_clip
    for unit in access_units:
        assert split_avcc(annexb_to_avcc(unit)) == split_annexb(unit)
        assert b"\x00\x00\x01" not in b"".join(n[:3] for n in split_annexb(unit))


def test_is_idr_agrees_with_the_container_keyframe_flag(tmp_path):
    path = _encode(tmp_path / "g.mp4", "320x240", 30, "-g", "4", "-bf", "2")
    with av.open(str(path)) as container:
        packets = [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]
    assert [is_idr(data) for data, _ in packets] == [key for _, key in packets]
    assert sum(key for _, key in packets) == 3


def test_split_annexb_accepts_three_and_four_byte_start_codes_and_trailing_zeros():
    stream = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x42\x00\x00\x00\x00\x01\x68\xce"
    assert split_annexb(stream) == [b"\x09\xf0", b"\x67\x42", b"\x68\xce"]


def test_split_annexb_rejects_bytes_before_the_first_start_code():
    with pytest.raises(H264Error, match="2 bytes before the first start code"):
        split_annexb(b"\xab\xcd\x00\x00\x01\x09\xf0")


def test_split_avcc_rejects_a_length_running_past_the_buffer():
    with pytest.raises(H264Error, match="NAL unit length 9 at offset 0; expected 1..2"):
        split_avcc(b"\x00\x00\x00\x09\x65\x88")


def test_split_avcc_reads_two_byte_lengths_and_join_avcc_inverts_it():
    data = b"\x00\x02\x65\x88\x00\x01\x06"
    assert split_avcc(data, 2) == [b"\x65\x88", b"\x06"]
    assert join_avcc([b"\x65\x88", b"\x06"], 2) == data
    assert nal_types(data, 2) == [5, 6]


def test_emulation_prevention_bytes_are_removed_only_after_two_zeros():
    assert unescape_rbsp(b"\x00\x00\x03\x01\x03\x00\x00\x03\x00\x00\x03") == (
        b"\x00\x00\x01\x03\x00\x00\x00\x00"
    )
    assert unescape_rbsp(b"\x00\x03\x00\x03") == b"\x00\x03\x00\x03"


def test_exp_golomb_codes_decode_as_in_table_9_2():
    # ue: 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3; se: 010 -> +1, 011 -> -1, 00100 -> +2
    reader = BitReader(bytes([0b1010_0110, 0b0100_0100, 0b1100_1000]))
    assert [reader.ue(), reader.ue(), reader.ue(), reader.ue()] == [0, 1, 2, 3]
    assert [reader.se(), reader.se(), reader.se()] == [1, -1, 2]


# Hand-written SPSs for what libx264 never emits (scaling lists live in its PPS) and for
# bit patterns that need emulation prevention.


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> _BitWriter:
        self.bits += [(value >> (count - 1 - i)) & 1 for i in range(count)]
        return self

    def ue(self, value: int) -> _BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> _BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, header: int) -> bytes:
        bits = self.bits + [1] + [0] * (-(len(self.bits) + 1) % 8)
        rbsp = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
        out, zeros = bytearray([header]), 0
        for byte in rbsp:
            if zeros >= 2 and byte <= 3:
                out.append(3)
                zeros = 0
            out.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return bytes(out)


def _write_scaling_list(w: _BitWriter, size: int, first_delta: int) -> None:
    """Write deltas until nextScale reaches 0, where the syntax ends the list (7.3.2.1.1.1)."""
    last = 8
    for coefficient in range(size):
        delta = first_delta if coefficient == 0 else (3 if coefficient % 2 else -5)
        w.se(delta)
        following = (last + delta + 256) % 256
        if following == 0:
            return
        last = following


def _crafted_sps(
    *,
    profile: int = 100,
    scaling_lists: bool = False,
    poc_type: int = 0,
    size_in_mbs: tuple[int, int] = (120, 68),
    crop: tuple[int, int, int, int] | None = (0, 0, 0, 4),
    timing: tuple[int, int] | None = (1001, 60000),
) -> bytes:
    w = _BitWriter().u(8, profile).u(8, 0).u(8, 40).ue(0)
    if profile in (100, 122, 244):
        w.ue(1).ue(0).ue(0).u(1, 0).u(1, int(scaling_lists))  # 4:2:0, 8 bit
        if scaling_lists:
            for index in range(8):
                w.u(1, 1)
                _write_scaling_list(w, 16 if index < 6 else 64, first_delta=-8 if index else 5)
    w.ue(0).ue(poc_type)
    if poc_type == 0:
        w.ue(2)
    elif poc_type == 1:
        w.u(1, 0).se(-2).se(3).ue(3).se(1).se(-1).se(4)
    w.ue(4).u(1, 0).ue(size_in_mbs[0] - 1).ue(size_in_mbs[1] - 1).u(1, 1).u(1, 1)
    w.u(1, crop is not None)
    for offset in crop or ():
        w.ue(offset)
    w.u(1, 1)  # vui_parameters_present_flag
    w.u(1, 1).u(8, 255).u(16, 4).u(16, 3)  # extended SAR 4:3
    w.u(1, 0).u(1, 1).u(3, 5).u(1, 0).u(1, 1).u(8, 1).u(8, 1).u(8, 1)  # video signal, BT.709
    w.u(1, 1).ue(0).ue(0)  # chroma location
    w.u(1, timing is not None)
    if timing:
        w.u(32, timing[0]).u(32, timing[1]).u(1, 1)
    return w.nal(0x67)


def test_sps_with_scaling_lists_and_full_vui_still_yields_size_and_frame_rate():
    info = parse_sps(_crafted_sps(scaling_lists=True, timing=(1001, 60000)))
    assert (info.width, info.height) == (1920, 1080)
    assert info.frame_rate == pytest.approx(29.97, abs=0.001)


def test_sps_with_emulation_prevention_bytes_is_read_after_unescaping():
    sps = _crafted_sps(scaling_lists=True, timing=(1, 60))
    assert b"\x00\x00\x03" in sps  # num_units_in_tick = 1 is 31 zero bits in a row
    info = parse_sps(sps)
    assert (info.width, info.height, info.frame_rate) == (1920, 1080, 30.0)


def test_sps_with_pic_order_count_type_1_and_no_cropping_or_timing():
    info = parse_sps(_crafted_sps(profile=77, poc_type=1, crop=None, timing=None))
    assert (info.width, info.height, info.frame_rate) == (1920, 1088, None)


def test_sps_cropping_larger_than_the_picture_is_refused():
    with pytest.raises(H264Error, match=r"frame cropping 0,0,0,600 leaves 1920x-112"):
        parse_sps(_crafted_sps(crop=(0, 0, 0, 600)))


def test_sps_with_a_reserved_chroma_format_is_refused():
    sps = _BitWriter().u(8, 100).u(8, 0).u(8, 40).ue(0).ue(7).nal(0x67)
    with pytest.raises(H264Error, match="chroma_format_idc is 7; expected 0..3"):
        parse_sps(sps)


def test_parse_sps_refuses_a_nal_unit_that_is_not_an_sps():
    with pytest.raises(H264Error, match="got type 8"):
        parse_sps(b"\x68\xce\x3c\x80")


def test_parse_avcc_refuses_wrong_version_and_truncated_parameter_sets():
    with pytest.raises(H264Error, match="configurationVersion is 0; expected 1"):
        parse_avcc(b"\x00\x64\x00\x28\xff\xe1\x00")
    with pytest.raises(H264Error, match=r"avcC SPS #0 has length 26; expected 1..3"):
        parse_avcc(b"\x01\x64\x00\x28\xff\xe1\x00\x1a\x67\x64\x00")


def test_build_avcc_writes_the_high_profile_extension_that_parse_avcc_tolerates():
    sps = _crafted_sps()
    record = build_avcc([sps], [b"\x68\xeb\xe3\xcb"])
    assert record[-4:] == b"\xfd\xf8\xf8\x00"  # 4:2:0, 8-bit luma and chroma, no SPS ext
    assert parse_avcc(record).sps == (sps,)


@given(st.binary(max_size=200))
def test_parse_avcc_of_arbitrary_bytes_raises_only_h264error(data):
    with contextlib.suppress(H264Error):
        video_config_from_avcc(data)


@given(st.binary(max_size=120))
def test_parse_sps_of_arbitrary_bytes_raises_only_h264error(data):
    try:
        info = parse_sps(b"\x67" + data)
    except H264Error:
        return
    assert info.width > 0 and info.height > 0


@given(st.binary(max_size=200), st.sampled_from([1, 2, 4]))
def test_nal_framing_of_arbitrary_bytes_raises_only_h264error(data, length_size):
    for call in (split_annexb, lambda d: split_avcc(d, length_size), annexb_to_avcc):
        with contextlib.suppress(H264Error):
            call(data)


@given(st.integers(0, 200), st.integers(0, 255), st.integers(1, 200))
def test_corrupted_or_truncated_real_sps_raises_only_h264error(at, value, keep):
    sps = bytearray(_crafted_sps(scaling_lists=True))
    sps[1 + at % (len(sps) - 1)] = value
    with contextlib.suppress(H264Error):
        parse_sps(bytes(sps[: 1 + keep]))
