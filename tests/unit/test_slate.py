"""Slate segments decoded by real decoders: PyAV (libavcodec) frame by frame, and the
ffmpeg/ffprobe CLIs over a concatenation, down to every pixel and every audio sample."""

from __future__ import annotations

import array
import io
import math
import shutil
import struct
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codecs.bit_writer import BitWriter
from media.codecs.h264 import (
    BitReader,
    escape_rbsp,
    parse_avcc,
    unescape_rbsp,
    video_config_from_avcc,
)
from media.codecs.h264_grey import grey_avcc
from media.hls.slate import SLATE_FRAME_RATE, SlateFormat, slate_codecs, slate_init, slate_segment
from media.types import CLOCK_HZ
from tests.media import make_source, package_flv

FRAME_TICKS = 90_000 // SLATE_FRAME_RATE
STEREO_48K_720P = SlateFormat(1280, 720, 48000, 2)
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed",
)


def _slate(fmt: SlateFormat, *spans: tuple[float, float], first_sequence: int = 1) -> bytes:
    """The init segment and one segment per (start, duration), numbered from first_sequence."""
    segments = [
        slate_segment(fmt, sequence=first_sequence + i, start_seconds=start, duration_seconds=dur)
        for i, (start, dur) in enumerate(spans)
    ]
    return slate_init(fmt) + b"".join(segments)


def _packets(data: bytes, kind: str) -> list[av.Packet]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        return [p for p in container.demux(stream) if p.size]


def _pixel_values(frame: av.VideoFrame) -> set[int]:
    """Every value of Y, Cb and Cr inside the picture (the planes' row padding left out)."""
    values: set[int] = set()
    for plane in frame.planes:
        data = bytes(plane)
        for row in range(plane.height):
            values.update(data[row * plane.line_size : row * plane.line_size + plane.width])
    return values


# --------------------------------------------------------------------------- the bit writer


def test_bit_writer_codes_fields_and_exp_golomb_as_the_standard_tables_list() -> None:
    writer = BitWriter()
    writer.bits(0b101, 3)
    for value in (0, 1, 2, 3, 7):  # 1, 010, 011, 00100, 0001000
        writer.ue(value)
    for value in (1, -1, 2):  # 010, 011, 00100
        writer.se(value)
    writer.flag(True)
    assert writer.bit_count == 3 + 1 + 3 + 3 + 5 + 7 + 3 + 3 + 5 + 1
    expected = "101" + "1" + "010" + "011" + "00100" + "0001000" + "010" + "011" + "00100" + "1"
    padded = expected + "0" * (-len(expected) % 8)
    assert writer.to_bytes() == int(padded, 2).to_bytes(len(padded) // 8, "big")


def test_rbsp_trailing_bits_end_on_a_byte_boundary() -> None:
    writer = BitWriter()
    writer.bits(0, 3)
    writer.rbsp_trailing_bits()
    assert writer.to_bytes() == b"\x10"
    writer.rbsp_trailing_bits()  # already aligned: a whole byte of stop bit and zeros
    assert writer.to_bytes() == b"\x10\x80"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.bits(8, 3), "value 8 does not fit an unsigned field of 3 bits"),
        (lambda w: w.bits(-1, 4), "value -1 does not fit"),
        (lambda w: w.ue(-2), r"ue\(v\) codes values >= 0, got -2"),
    ],
)
def test_bit_writer_refuses_a_value_its_field_cannot_hold(call, message: str) -> None:
    writer = BitWriter()
    writer.bits(1, 1)
    with pytest.raises(ValueError, match=message):
        call(writer)
    assert writer.to_bytes() == b"\x80"  # nothing of the refused field was written


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("bits"), st.integers(0, 64)).flatmap(
                lambda t: st.tuples(st.just(t[0]), st.integers(0, (1 << t[1]) - 1), st.just(t[1]))
            ),
            st.tuples(st.just("ue"), st.integers(0, 1 << 31), st.just(0)),
            st.tuples(st.just("se"), st.integers(-(1 << 30), 1 << 30), st.just(0)),
        ),
        max_size=40,
    )
)
def test_bit_reader_reads_back_what_the_bit_writer_wrote(fields) -> None:
    writer = BitWriter()
    for kind, value, count in fields:
        writer.bits(value, count) if kind == "bits" else getattr(writer, kind)(value)
    reader = BitReader(writer.to_bytes())
    for kind, value, count in fields:
        assert (reader.bits(count) if kind == "bits" else getattr(reader, kind)()) == value
    assert reader.bits_left < 8


@given(st.binary(max_size=64).map(lambda b: b + b"\x80"))
def test_escaped_rbsp_has_no_start_code_and_unescapes_to_itself(rbsp: bytes) -> None:
    escaped = escape_rbsp(rbsp)
    for prefix in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert prefix not in escaped
    assert unescape_rbsp(escaped) == rbsp


# --------------------------------------------------------------------------- video


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("width", "height"), [(16, 16), (854, 480), (1278, 718), (1920, 1080), (4096, 2304)]
)
def test_video_decodes_to_uniform_grey_at_the_asked_size(width: int, height: int) -> None:
    fmt = SlateFormat(width, height, None, None)
    data = _slate(fmt, (0.0, 0.4), (0.4, 0.4))
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 * 0.4 * SLATE_FRAME_RATE
    for frame in frames:
        assert (frame.width, frame.height) == (width, height)
        assert frame.format.name == "yuv420p"
        assert _pixel_values(frame) == {128}
    # each segment starts with its own IDR picture
    assert [f.key_frame for f in frames] == 2 * ([True] + [False] * 9)


def test_video_has_a_frame_per_25th_of_a_second_and_a_shortened_last_one() -> None:
    fmt = SlateFormat(640, 360, None, None)
    packets = _packets(_slate(fmt, (10.0, 2.01)), "video")
    assert len(packets) == 51
    assert [p.duration for p in packets] == [FRAME_TICKS] * 50 + [900]
    assert packets[0].dts == 900_000
    assert [p.is_keyframe for p in packets] == [True] + [False] * 50


def test_the_avcc_parses_as_constrained_baseline_with_the_cropped_size() -> None:
    record = grey_avcc(854, 480, SLATE_FRAME_RATE)
    config = video_config_from_avcc(record)
    assert (config.width, config.height) == (854, 480)
    assert config.codec_string == "avc1.42c01e"  # level 3.0: 1620 macroblocks at 25 fps
    assert parse_avcc(record).profile_idc == 66
    assert slate_codecs(SlateFormat(854, 480, 48000, 2)) == "avc1.42c01e,mp4a.40.2"
    assert slate_codecs(SlateFormat(4096, 2304, None, None)) == "avc1.42c033"  # level 5.1
    assert slate_codecs(SlateFormat(None, None, 44100, 1)) == "mp4a.40.2"


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(("sample_rate", "channels"), [(48000, 2), (44100, 1), (8000, 2)])
def test_audio_decodes_to_exact_silence_at_the_asked_rate_and_channels(
    sample_rate: int, channels: int
) -> None:
    fmt = SlateFormat(None, None, sample_rate, channels)
    with av.open(io.BytesIO(_slate(fmt, (3.0, 2.0)))) as container:
        frames = list(container.decode(audio=0))
    assert {(f.sample_rate, len(f.layout.channels)) for f in frames} == {(sample_rate, channels)}
    assert len(frames) == math.ceil(2.0 * sample_rate / 1024)
    for frame in frames:
        for plane in frame.planes:
            samples = array.array("f", bytes(plane))[: frame.samples]
            assert samples.count(0.0) == frame.samples


def test_audio_covers_the_duration_with_its_last_frame_shortened() -> None:
    packets = _packets(_slate(SlateFormat(None, None, 48000, 2), (1.0, 2.0)), "audio")
    assert packets[0].dts == 48000
    assert [p.duration for p in packets] == [1024] * 93 + [96000 - 93 * 1024]


# --------------------------------------------------------------------------- timing


def test_consecutive_segments_continue_each_track_without_a_jump() -> None:
    spans = [(1000.04, 1.5), (1001.54, 2.3), (1003.84, 0.97)]
    data = _slate(STEREO_48K_720P, *spans, first_sequence=7)
    for kind, rate in (("video", 90_000), ("audio", 48_000)):
        packets = _packets(data, kind)
        assert packets[0].dts == round(1000.04 * rate)
        for before, after in zip(packets, packets[1:], strict=False):
            assert after.dts == before.dts + before.duration, (kind, before, after)
        assert packets[-1].dts + packets[-1].duration == round((1003.84 + 0.97) * rate)


def test_mfhd_carries_the_sequence_number_the_caller_passed() -> None:
    segment = slate_segment(STEREO_48K_720P, sequence=4242, start_seconds=0, duration_seconds=1)
    mfhd = segment.index(b"mfhd")
    assert struct.unpack_from(">I", segment, mfhd + 8)[0] == 4242


@needs_ffmpeg
@pytest.mark.timeout(120)
def test_ffmpeg_and_ffprobe_read_init_and_three_segments_without_an_error(tmp_path: Path) -> None:
    path = tmp_path / "slate.mp4"
    path.write_bytes(_slate(STEREO_48K_720P, (0, 2), (2, 2), (4, 2)))
    for command in (
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        ["ffprobe", "-v", "error", "-show_frames", "-show_packets", str(path)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=100)
        assert (result.returncode, result.stderr) == (0, ""), command
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,profile,width,height,nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=100,
    )  # fmt: skip
    assert probe.stdout.splitlines() == ["h264,Constrained Baseline,1280,720,150", "aac,LC,282"]


@needs_ffmpeg
@pytest.mark.timeout(120)
def test_ffmpeg_decodes_a_live_stream_on_both_sides_of_a_slate_in_one_playlist(
    tmp_path: Path,
) -> None:
    """ffmpeg's HLS reader keeps the first init's avcC across EXT-X-MAP changes: the slate's
    in-band parameter sets, under ids of their own, must not clobber the stream's."""
    source = make_source(tmp_path / "live.flv", seconds=7, size="320x240", gop=30)
    first, second, outage, after = package_flv(source)[:4]
    fmt = SlateFormat(320, 240, 48000, 2)
    (tmp_path / "live.mp4").write_bytes(first.init.data)
    (tmp_path / "slate.mp4").write_bytes(slate_init(fmt))
    slate = slate_segment(
        fmt,
        sequence=outage.sequence,
        start_seconds=outage.start_ticks / CLOCK_HZ,
        duration_seconds=outage.duration,
    )
    entries = []
    for name, segment, data in [
        ("0.m4s", first, first.data),
        ("1.m4s", second, second.data),
        ("slate.m4s", outage, slate),
        ("3.m4s", after, after.data),
    ]:
        (tmp_path / name).write_bytes(data)
        if name == "slate.m4s":
            entries += ["#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="slate.mp4"']
        elif name == "3.m4s":
            entries += ["#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="live.mp4"']
        entries += [f"#EXTINF:{segment.duration:.3f},", name]
    header = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:2", '#EXT-X-MAP:URI="live.mp4"']
    playlist = tmp_path / "index.m3u8"
    playlist.write_text("\n".join([*header, *entries, "#EXT-X-ENDLIST"]) + "\n")

    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(playlist), "-f", "null", "-"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width",
         "-of", "default=nw=1:nk=1", str(playlist)],
        capture_output=True, text=True, check=True, timeout=100,
    )  # fmt: skip
    slate_frames = math.ceil(outage.duration * SLATE_FRAME_RATE)
    live_frames = first.video_frames + second.video_frames + after.video_frames
    assert probe.stdout.split() == ["320"] * (live_frames + slate_frames)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((853, 480, None, None), r"must be even .* got 853x480"),
        ((1280, 719, None, None), r"must be even .* got 1280x719"),
        ((14, 16, None, None), r"size must be 16..4096 x 16..2304, got 14x16"),
        ((4098, 2304, None, None), r"got 4098x2304"),
        ((4096, 2306, None, None), r"got 4096x2306"),
        ((1280, None, None, None), r"both given or both None, got 1280xNone"),
        ((None, None, 48000, None), r"48000 Hz and None channels"),
        ((None, None, None, None), r"needs a video or an audio track, got neither"),
        ((None, None, 48000, 6), r"1 or 2 channels, got 6"),
        ((None, None, 48000, 0), r"1 or 2 channels, got 0"),
        ((None, None, 47999, 2), r"sample rate must be one of 96000, .*, 7350 Hz, got 47999"),
    ],
)
def test_a_format_the_slate_cannot_code_is_refused(fields: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SlateFormat(*fields)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration_seconds": 0}, r"more than 0 and at most 60 s, got 0"),
        ({"duration_seconds": -1.0}, r"got -1.0"),
        ({"duration_seconds": 60.5}, r"got 60.5"),
        ({"duration_seconds": math.nan}, r"got nan"),
        ({"duration_seconds": 1e-9}, r"1e-09 s is shorter than one tick of the 90000 Hz clock"),
        ({"start_seconds": -0.5}, r"start must be a finite time >= 0 s, got -0.5"),
        ({"start_seconds": math.inf}, r"got inf"),
        ({"sequence": 1 << 32}, r"sequence number must fit 32 bits, got 4294967296"),
        ({"sequence": -1}, r"got -1"),
    ],
)
def test_a_segment_the_slate_cannot_make_is_refused(kwargs: dict, message: str) -> None:
    arguments = {"sequence": 1, "start_seconds": 0.0, "duration_seconds": 2.0} | kwargs
    with pytest.raises(ValueError, match=message):
        slate_segment(STEREO_48K_720P, **arguments)
