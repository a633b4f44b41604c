"""FLV tag bodies (RTMP message payloads) to access units, checked against ffmpeg and ffprobe."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codecs.h264 import parse_avcc, parse_sps, split_avcc
from media.demux.flv import (
    DemuxError,
    FlvDemuxer,
    FlvTag,
    FlvTagType,
    UnsupportedCodecError,
    iter_flv_tags,
)
from media.types import AccessUnit, AudioConfig, TrackKind, VideoCodec, VideoConfig

PROFILE_IDC = {"Constrained Baseline": 66, "Main": 77, "High": 100}


def _make_flv(path: Path, size: str, *video_args: str, audio: tuple[str, ...] = ()) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-f", "lavfi", "-i", "sine=sample_rate=48000",
         "-t", "2", *video_args, *(audio or ("-c:a", "aac", "-ac", "2")), "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_packets", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def _demux_file(path: Path, demuxer: FlvDemuxer | None = None, offset_ms: int = 0) -> list:
    demuxer = demuxer or FlvDemuxer()
    events = []
    for tag in iter_flv_tags(path.read_bytes()):
        if tag.tag_type == FlvTagType.VIDEO:
            events += demuxer.video(tag.timestamp_ms + offset_ms, tag.payload)
        elif tag.tag_type == FlvTagType.AUDIO:
            events += demuxer.audio(tag.timestamp_ms + offset_ms, tag.payload)
    return events


X264 = ["-c:v", "libx264", "-preset", "superfast", "-bf", "2", "-g", "30"]
STREAMS = {
    "1920x1080": ["-profile:v", "high"],
    "1280x720": ["-profile:v", "main"],
    "854x480": [],
    "640x360": ["-profile:v", "baseline"],
}


@pytest.fixture(scope="module", params=list(STREAMS))
def flv_stream(request, tmp_path_factory) -> tuple[str, list, dict]:
    folder = tmp_path_factory.mktemp("flv")
    path = _make_flv(folder / "clip.flv", request.param, *X264, *STREAMS[request.param])
    return request.param, _demux_file(path), _ffprobe(path)


def _probe_stream(probe: dict, codec_type: str) -> tuple[dict, list[dict]]:
    stream = next(s for s in probe["streams"] if s["codec_type"] == codec_type)
    packets = [p for p in probe["packets"] if p["stream_index"] == stream["index"]]
    return stream, packets


def _units(events: list, kind: TrackKind) -> list[AccessUnit]:
    return [e for e in events if isinstance(e, AccessUnit) and e.kind == kind]


def test_sequence_header_gives_cropped_size_and_ffprobes_profile_and_level(flv_stream):
    size, events, probe = flv_stream
    stream, _ = _probe_stream(probe, "video")
    configs = [e for e in events if isinstance(e, VideoConfig)]
    assert len(configs) == 1
    config = configs[0]
    assert f"{config.width}x{config.height}" == size == f"{stream['width']}x{stream['height']}"
    record = parse_avcc(config.record)
    assert config.codec is VideoCodec.H264
    assert record.profile_idc == PROFILE_IDC[stream["profile"]]
    assert record.level_idc == stream["level"]
    assert parse_sps(record.sps[0]).frame_rate == 30


def test_video_access_units_match_ffprobes_packets_in_number_timestamps_and_keyframes(flv_stream):
    _, events, probe = flv_stream
    _, packets = _probe_stream(probe, "video")
    units = _units(events, TrackKind.VIDEO)
    assert len(units) == len(packets) == 60
    assert [(u.dts, u.pts) for u in units] == [(p["dts"] * 90, p["pts"] * 90) for p in packets]
    assert [u.keyframe for u in units] == ["K" in p["flags"] for p in packets]
    assert [u.data for u in units if u.keyframe][0] != b""
    assert all(split_avcc(u.data) for u in units)  # 4-byte length-prefixed, as media.py says


def test_b_frames_give_presentation_times_after_decode_times(flv_stream):
    size, events, _ = flv_stream
    units = _units(events, TrackKind.VIDEO)
    if size == "640x360":  # baseline: no B-frames, so no reordering and no composition offset
        assert all(u.pts == u.dts for u in units)
    else:
        assert sum(u.pts > u.dts for u in units) > len(units) // 2
        presentation = [u.pts for u in units]
        assert presentation != sorted(presentation)  # decode order differs from display order


def test_audio_gives_48khz_stereo_lc_config_and_one_unit_per_ffprobe_packet(flv_stream):
    _, events, probe = flv_stream
    _, packets = _probe_stream(probe, "audio")
    configs = [e for e in events if isinstance(e, AudioConfig)]
    assert [(c.object_type, c.sample_rate, c.channels) for c in configs] == [(2, 48000, 2)]
    units = _units(events, TrackKind.AUDIO)
    assert len(units) == len(packets)
    assert [u.dts for u in units] == [u.pts for u in units] == [p["pts"] * 90 for p in packets]
    assert all(u.keyframe for u in units)


def test_second_sequence_header_mid_stream_emits_a_new_video_config(tmp_path):
    first = _make_flv(tmp_path / "a.flv", "1280x720", *X264)
    second = _make_flv(tmp_path / "b.flv", "640x360", *X264)
    demuxer = FlvDemuxer()
    events = _demux_file(first, demuxer) + _demux_file(second, demuxer, offset_ms=2000)
    sizes = [(e.width, e.height) for e in events if isinstance(e, VideoConfig)]
    assert sizes == [(1280, 720), (640, 360)]
    assert (demuxer.video_config.width, demuxer.video_config.height) == (640, 360)
    assert len(_units(events, TrackKind.VIDEO)) == 120


def test_flv1_video_is_refused_naming_the_codec(tmp_path):
    path = _make_flv(tmp_path / "flv1.flv", "320x240", "-c:v", "flv")
    with pytest.raises(UnsupportedCodecError, match=r"Sorenson H\.263 \(FLV1\) is not supported"):
        _demux_file(path)


def test_mp3_audio_is_refused_naming_the_codec(tmp_path):
    path = _make_flv(tmp_path / "mp3.flv", "320x240", *X264, audio=("-c:a", "libmp3lame"))
    with pytest.raises(UnsupportedCodecError, match="audio codec MP3 is not supported"):
        _demux_file(path)


def test_enhanced_rtmp_hevc_is_refused_naming_the_fourcc():
    with pytest.raises(UnsupportedCodecError, match="Enhanced RTMP video \\(FourCC hvc1\\)"):
        FlvDemuxer().video(0, b"\x90hvc1\x01\x02")
    with pytest.raises(UnsupportedCodecError, match="HEVC \\(non-standard codec id 12\\)"):
        FlvDemuxer().video(0, b"\x1c\x00\x00\x00\x00")
    with pytest.raises(UnsupportedCodecError, match="Enhanced RTMP audio \\(FourCC Opus\\)"):
        FlvDemuxer().audio(0, b"\x90Opus")


# Hand-made payloads around a real x264 parameter set.
SPS = bytes.fromhex("6764001eacd940a02ff970110000030001000003003c0f162d96")  # 640x360 high
PPS = bytes.fromhex("68ef8fcb")
AVCC = bytes([1, 0x64, 0, 0x1E, 0xFF, 0xE1]) + len(SPS).to_bytes(2, "big") + SPS + b"\x01"
AVCC += len(PPS).to_bytes(2, "big") + PPS


def test_negative_composition_time_is_read_as_signed_24_bit():
    demuxer = FlvDemuxer()
    demuxer.video(0, b"\x17\x00\x00\x00\x00" + AVCC)
    [unit] = demuxer.video(1000, b"\x27\x01\xff\xff\xf6" + b"\x00\x00\x00\x02\x41\x9a")
    assert (unit.dts, unit.pts, unit.keyframe) == (90_000, 89_100, False)


NALU = b"\x00\x00\x00\x02\x41\x9a"
AAC_RAW_FRAME = b"\xaf\x01\x21\x00"


def _video_dts_ms(demuxer: FlvDemuxer, stamps: list[int]) -> list[int]:
    return [demuxer.video(ms, b"\x27\x01\x00\x00\x00" + NALU)[0].dts // 90 for ms in stamps]


def test_the_32_bit_millisecond_wrap_continues_the_timeline_for_both_tracks():
    demuxer = FlvDemuxer()
    near_wrap = (1 << 32) - 40
    assert _video_dts_ms(demuxer, [near_wrap, near_wrap + 33]) == [near_wrap, near_wrap + 33]
    [sound] = demuxer.audio(10, AAC_RAW_FRAME)  # 2**32 + 10: after the wrap
    assert sound.dts == ((1 << 32) + 10) * 90
    assert _video_dts_ms(demuxer, [27]) == [(1 << 32) + 27]
    assert demuxer.clock_restarts == 0


def test_a_timestamp_jump_continues_half_a_second_later_and_is_counted():
    demuxer = FlvDemuxer()
    assert _video_dts_ms(demuxer, [1000, 1033, 900_000_000, 900_000_033, 5]) == [
        1000,
        1033,
        1533,
        1566,
        2066,
    ]
    assert demuxer.clock_restarts == 2


def test_a_small_step_back_is_passed_on_for_the_segmenter_to_judge():
    demuxer = FlvDemuxer()
    assert _video_dts_ms(demuxer, [5000, 4000]) == [5000, 4000]


def test_sequence_headers_do_not_move_the_media_clock():
    demuxer = FlvDemuxer()
    assert _video_dts_ms(demuxer, [3_000_000]) == [3_000_000]
    demuxer.video(0, b"\x17\x00\x00\x00\x00" + AVCC)  # a new header stamped 0
    assert _video_dts_ms(demuxer, [3_000_033]) == [3_000_033]
    assert demuxer.clock_restarts == 0


def test_two_byte_nal_lengths_are_rewritten_to_four_in_config_and_units():
    demuxer = FlvDemuxer()
    short = AVCC[:4] + b"\xfd" + AVCC[5:]
    [config] = demuxer.video(0, b"\x17\x00\x00\x00\x00" + short)
    assert parse_avcc(config.record).nal_length_size == 4
    assert (config.width, config.height) == (640, 360)
    [unit] = demuxer.video(0, b"\x17\x01\x00\x00\x00" + b"\x00\x02\x65\x88\x00\x01\x06")
    assert unit.data == b"\x00\x00\x00\x02\x65\x88\x00\x00\x00\x01\x06"


def test_end_of_sequence_command_frames_and_empty_packets_yield_nothing():
    demuxer = FlvDemuxer()
    assert demuxer.video(0, b"\x17\x02\x00\x00\x00") == []
    assert demuxer.video(0, b"\x57\x00") == []  # video info/command frame
    assert demuxer.video(0, b"\x27\x01\x00\x00\x00") == []
    assert demuxer.audio(0, b"\xaf\x01") == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "video payload is empty"),
        (b"\x07\x01", "video frame type is 0; expected 1..5"),
        (b"\x17\x01\x00", "AVC video payload is 3 bytes; expected at least 5"),
        (b"\x17\x03\x00\x00\x00", "AVCPacketType is 3; expected 0, 1 or 2"),
        (b"\x17\x00\x00\x00\x00\x02\x64", "AVC sequence header: avcC record is 2 bytes"),
        (b"\x17\x01\x00\x00\x00\x00\x00\x00\x09\x65", "NAL unit length 9 at offset 0"),
    ],
)
def test_malformed_video_payload_raises_demux_error_with_the_offending_value(payload, message):
    with pytest.raises(DemuxError, match=message):
        FlvDemuxer().video(0, payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "audio payload is empty"),
        (b"\xaf", "AAC audio payload is 1 byte"),
        (b"\xaf\x02\x00", "AACPacketType is 2; expected 0 or 1"),
        (b"\xaf\x00\x16\x90", "AAC sequence header: samplingFrequencyIndex is 13"),
    ],
)
def test_malformed_audio_payload_raises_demux_error_with_the_offending_value(payload, message):
    with pytest.raises(DemuxError, match=message):
        FlvDemuxer().audio(0, payload)


def _flv_file(*tags: tuple[int, int, bytes]) -> bytes:
    out = bytearray(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
    for tag_type, timestamp, payload in tags:
        out += bytes([tag_type]) + len(payload).to_bytes(3, "big")
        out += (timestamp & 0xFFFFFF).to_bytes(3, "big") + bytes([timestamp >> 24]) + b"\0\0\0"
        out += payload + (11 + len(payload)).to_bytes(4, "big")
    return bytes(out)


def test_flv_file_reader_combines_the_extended_timestamp_byte():
    data = _flv_file((9, 0x01_000005, b"\x17\x02\x00\x00\x00"), (8, 7, b"\xaf\x01\x21"))
    assert list(iter_flv_tags(data)) == [
        FlvTag(FlvTagType.VIDEO, 16_777_221, b"\x17\x02\x00\x00\x00"),
        FlvTag(FlvTagType.AUDIO, 7, b"\xaf\x01\x21"),
    ]


def test_flv_file_reader_refuses_bad_signature_truncation_and_size_mismatch():
    good = _flv_file((8, 0, b"\xaf\x01\x21"))
    with pytest.raises(DemuxError, match="expected b'FLV'"):
        list(iter_flv_tags(b"FLX" + good[3:]))
    with pytest.raises(DemuxError, match="declares 3 bytes; the file ends at"):
        list(iter_flv_tags(good[:-2]))
    with pytest.raises(DemuxError, match="PreviousTagSize after the tag at offset 13 is 15"):
        list(iter_flv_tags(good[:-1] + b"\x0f"))
    with pytest.raises(DemuxError, match="FLV tag type 7 at offset 13"):
        list(iter_flv_tags(_flv_file((7, 0, b"\x00"))))


PREFIXES = [b"", b"\x17\x00\x00\x00\x00", b"\x17\x01\x00\x00\x00", b"\x27\x01\xff\xff\xff",
            b"\xaf\x00", b"\xaf\x01", b"\x17\x00\x00\x00\x00" + AVCC[:6]]  # fmt: skip


@given(st.sampled_from(PREFIXES), st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_arbitrary_payloads_raise_only_demux_errors(prefix, data, timestamp):
    demuxer = FlvDemuxer()
    for feed in (demuxer.video, demuxer.audio):
        with contextlib.suppress(DemuxError):
            feed(timestamp, prefix + data)


@given(st.integers(0, len(AVCC)), st.binary(max_size=8), st.integers(0, len(AVCC) - 1), st.binary())
def test_truncated_or_corrupted_sequence_headers_raise_only_demux_errors(cut, junk, at, patch):
    corrupted = AVCC[:at] + patch[:1] + AVCC[at + len(patch[:1]) :]
    for record in (AVCC[:cut] + junk, corrupted):
        with contextlib.suppress(DemuxError):
            FlvDemuxer().video(0, b"\x17\x00\x00\x00\x00" + record)


@given(st.binary(max_size=300))
def test_arbitrary_flv_files_raise_only_demux_errors(data):
    for candidate in (data, b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00" + data):
        with contextlib.suppress(DemuxError):
            list(iter_flv_tags(candidate))
