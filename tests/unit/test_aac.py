"""AudioSpecificConfig and ADTS, checked against ffmpeg's AAC encoder and ADTS muxer."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.codecs.aac import (
    SAMPLE_RATES,
    AacError,
    audio_config_from_adts,
    build_adts_frame,
    build_asc,
    parse_adts_header,
    parse_asc,
    split_adts,
)
from tests.media import explicit_he_aac_asc


def _encode_aac(folder: Path, sample_rate: int, channels: int) -> tuple[Path, Path]:
    """One AAC encode stored twice: in MP4 (ASC + raw frames) and remuxed to ADTS."""
    mp4, adts = folder / "tone.m4a", folder / "tone.aac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=sample_rate={sample_rate}",
         "-t", "1", "-ac", str(channels), "-c:a", "aac", str(mp4)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-c", "copy", "-f", "adts", str(adts)],
        check=True,
    )
    return mp4, adts


def _asc_and_frames(mp4: Path) -> tuple[bytes, list[bytes]]:
    with av.open(str(mp4)) as container:
        asc = bytes(container.streams.audio[0].codec_context.extradata)
        frames = [bytes(p) for p in container.demux(audio=0) if p.size]
    return asc, frames


def _ffprobe_packet_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "json", str(path)],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return int(json.loads(out)["streams"][0]["nb_read_packets"])


@pytest.fixture(scope="module", params=[(48000, 2), (44100, 1), (22050, 6)], ids=str)
def aac_clip(request, tmp_path_factory) -> tuple[int, int, Path, Path]:
    sample_rate, channels = request.param
    mp4, adts = _encode_aac(tmp_path_factory.mktemp("aac"), sample_rate, channels)
    return sample_rate, channels, mp4, adts


def test_ffmpeg_asc_parses_to_lc_with_its_rate_and_channels(aac_clip):
    sample_rate, channels, mp4, _ = aac_clip
    asc, _ = _asc_and_frames(mp4)
    config = parse_asc(asc)
    assert (config.object_type, config.sample_rate, config.channels) == (2, sample_rate, channels)
    assert config.codec_string == "mp4a.40.2"
    assert config.frame_samples == 1024
    assert config.asc == asc


def test_adts_file_splits_into_ffprobes_packet_count_of_the_mp4s_raw_frames(aac_clip):
    _, _, mp4, adts = aac_clip
    _, frames = _asc_and_frames(mp4)
    split = list(split_adts(adts.read_bytes()))
    assert [raw for _, raw in split] == frames
    assert len(split) == _ffprobe_packet_count(adts)


def test_adts_header_yields_the_same_config_as_the_mp4_asc(aac_clip):
    _, _, mp4, adts = aac_clip
    asc, _ = _asc_and_frames(mp4)
    from_adts = audio_config_from_adts(parse_adts_header(adts.read_bytes()))
    from_asc = parse_asc(asc)
    assert from_adts.asc == asc[:2]  # ffmpeg appends an SBR sync extension we do not need
    assert (from_adts.object_type, from_adts.sample_rate, from_adts.channels) == (
        from_asc.object_type, from_asc.sample_rate, from_asc.channels,
    )  # fmt: skip


def test_rewrapping_raw_frames_in_adts_reproduces_ffmpegs_adts_file_byte_for_byte(aac_clip):
    _, _, mp4, adts = aac_clip
    asc, frames = _asc_and_frames(mp4)
    config = parse_asc(asc)
    assert b"".join(build_adts_frame(config, raw) for raw in frames) == adts.read_bytes()


def test_asc_with_escaped_object_type_and_explicit_sample_rate():
    # object type 42 (USAC) = 31 + 6-bit 10, frequency index 15 + 24-bit 50000, stereo
    bits = f"{31:05b}{42 - 32:06b}{15:04b}{50000:024b}{2:04b}"
    bits += "0" * (-len(bits) % 8)
    config = parse_asc(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert (config.object_type, config.sample_rate, config.channels) == (42, 50000, 2)


def test_explicit_he_aac_reports_the_sbr_output_rate_and_frames_of_2048_samples_at_it():
    config = parse_asc(explicit_he_aac_asc())  # core 24 kHz, output 48 kHz
    assert (config.object_type, config.sample_rate, config.channels) == (5, 48000, 2)
    assert config.codec_string == "mp4a.40.5"
    assert config.frame_samples == 2048
    downsampled = parse_asc(explicit_he_aac_asc(core_rate_index=3, output_rate_index=3))
    assert (downsampled.sample_rate, downsampled.frame_samples) == (48000, 1024)


def test_channel_configuration_7_means_eight_channels():
    assert parse_asc(build_asc(2, 48000, 7)).channels == 8


@pytest.mark.parametrize(
    ("asc", "message"),
    [
        (b"\x12", r"AudioSpecificConfig of 1 bytes ends before bit 9"),
        (b"\x00\x00", r"audioObjectType is 0"),
        (b"\x16\x90", r"samplingFrequencyIndex is 13; expected 0..12 or 15"),
        (b"\x11\x80", r"channelConfiguration 0 \(layout in a program_config_element\)"),
        (b"\x11\xc8", r"channelConfiguration is 9; expected 1..7 or 11..14"),
    ],
)
def test_malformed_asc_is_refused_with_the_offending_value(asc, message):
    with pytest.raises(AacError, match=message):
        parse_asc(asc)


def test_adts_header_with_crc_is_nine_bytes():
    plain = build_adts_frame(parse_asc(b"\x11\x90"), b"\x21" * 10)
    fields = int.from_bytes(plain[:7], "big") & ~(1 << 40)  # protection_absent = 0
    fields = fields & ~(0x1FFF << 13) | 19 << 13  # frame_length = 9 + 10
    frame = fields.to_bytes(7, "big") + b"\xab\xcd" + plain[7:]  # CRC after the header
    header = parse_adts_header(bytes(frame))
    assert (header.header_length, header.frame_length, header.payload_length) == (9, 19, 10)
    assert list(split_adts(bytes(frame))) == [(header, b"\x21" * 10)]


def test_adts_with_a_broken_syncword_or_truncated_frame_is_refused():
    frame = build_adts_frame(parse_asc(b"\x11\x90"), b"\x21" * 10)
    with pytest.raises(AacError, match="syncword at offset 0 is 0xeff; expected 0xfff"):
        parse_adts_header(b"\xef" + frame[1:])
    with pytest.raises(AacError, match="at offset 17 needs 17 bytes; only 16 remain"):
        list(split_adts(frame + frame[:-1]))


def test_adts_cannot_carry_he_aac_or_non_table_rates():
    with pytest.raises(AacError, match="object types 1..4; got 5"):
        build_adts_frame(parse_asc(bytes.fromhex("2b098800")), b"\x00")
    with pytest.raises(AacError, match="table sample rate; got 50000"):
        build_adts_frame(parse_asc(build_asc(2, 50000, 2)), b"\x00")


@given(
    st.integers(1, 30).filter(lambda t: t not in (5, 29)),
    st.one_of(st.sampled_from(SAMPLE_RATES), st.integers(1, (1 << 24) - 1)),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14]),
)
def test_build_asc_round_trips_through_parse_asc(object_type, sample_rate, channel_config):
    config = parse_asc(build_asc(object_type, sample_rate, channel_config))
    assert (config.object_type, config.sample_rate) == (object_type, sample_rate)


@given(st.binary(max_size=64))
def test_parse_asc_of_arbitrary_bytes_raises_only_aacerror(data):
    with contextlib.suppress(AacError):
        parse_asc(data)


@given(st.binary(max_size=300))
def test_split_adts_of_arbitrary_bytes_raises_only_aacerror(data):
    with contextlib.suppress(AacError):
        for header, _ in split_adts(b"\xff\xf1" + data):
            audio_config_from_adts(header)
