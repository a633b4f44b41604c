"""H.264 bitstream helpers: SPS parsing, avcC records and NAL unit framing.

References: ITU-T H.264 / ISO 14496-10 (7.3.2.1.1 SPS syntax, E.1.1 VUI, Annex B byte
stream) and ISO 14496-15 5.3.3.1 (AVCDecoderConfigurationRecord).

Two framings of the same NAL units meet here: Annex B (start codes, MPEG-TS and SRT) and
AVCC (big-endian length prefixes, FLV/RTMP and MP4). Everything downstream of the demuxers
uses AVCC with 4-byte lengths, which is what `AccessUnit.data` holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from media.types import VideoCodec, VideoConfig


class H264Error(ValueError):
    """Malformed or unsupported H.264 data (SPS, avcC record or NAL unit framing)."""


class NalType(IntEnum):
    SLICE = 1
    IDR = 5
    SEI = 6
    SPS = 7
    PPS = 8
    AUD = 9
    END_OF_SEQUENCE = 10
    SPS_EXT = 13


# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (7.3.2.1.1).
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# Profiles whose avcC record carries the chroma/bit-depth extension (14496-15 5.3.3.1.2).
_AVCC_EXTENSION_PROFILES = frozenset({100, 110, 122, 144})
_MAX_UE_LEADING_ZEROS = 31


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes: every 0x000003 becomes 0x0000 (7.4.1)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


# A zero pair followed by a byte 0..3 gets an emulation_prevention_three_byte (7.4.1).
_NEEDS_EMULATION_PREVENTION = re.compile(b"\x00\x00(?=[\x00-\x03])")


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes so that no start code prefix appears (7.4.1); the
    inverse of `unescape_rbsp` for an RBSP that ends in its stop bit, as every RBSP does."""
    if b"\x00\x00" not in rbsp:
        return rbsp
    return _NEEDS_EMULATION_PREVENTION.sub(b"\x00\x00\x03", rbsp)


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes (9.1) over an RBSP.

    HEVC uses the same codes (H.265 9.2); `error` is the exception a short or malformed
    bitstream raises, so each codec's parser raises its own error type.
    """

    def __init__(self, data: bytes, error: type[ValueError] = H264Error) -> None:
        self._error = error
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self.position = 0

    @property
    def bits_left(self) -> int:
        return self._size - self.position

    def bits(self, count: int) -> int:
        if count > self.bits_left:
            raise self._error(
                f"bitstream ends at bit {self._size}; wanted {count} bits at bit {self.position}"
            )
        self.position += count
        return (self._value >> (self._size - self.position)) & ((1 << count) - 1)

    def flag(self) -> bool:
        return self.bits(1) == 1

    def ue(self) -> int:
        leading_zeros = 0
        while self.bits(1) == 0:
            leading_zeros += 1
            if leading_zeros > _MAX_UE_LEADING_ZEROS:
                raise self._error(
                    f"Exp-Golomb code at bit {self.position} has more than "
                    f"{_MAX_UE_LEADING_ZEROS} leading zeros"
                )
        return (1 << leading_zeros) - 1 + self.bits(leading_zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What the packager needs from a sequence parameter set."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    seq_parameter_set_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    frame_mbs_only: bool
    width: int  # after frame cropping
    height: int  # after frame cropping
    frame_rate: float | None  # from VUI timing info, None when absent


def expect_range(
    name: str, value: int, low: int, high: int, error: type[ValueError] = H264Error
) -> int:
    """`value` if it lies in low..high, else `error` naming the syntax element."""
    if not low <= value <= high:
        raise error(f"SPS {name} is {value}; expected {low}..{high}")
    return value


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = expect_range("delta_scale", reader.se(), -128, 127)
            next_scale = (last_scale + delta + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


def skip_vui_picture_fields(reader: BitReader) -> None:
    """Skip the VUI fields that H.264 (E.1.1) and HEVC (E.2.1) share, in the same order:
    aspect ratio, overscan, video signal type and chroma location."""
    # aspect_ratio_info_present_flag, then aspect_ratio_idc == Extended_SAR
    if reader.flag() and reader.bits(8) == 255:
        reader.bits(32)  # sar_width, sar_height
    if reader.flag():  # overscan_info_present_flag
        reader.bits(1)
    if reader.flag():  # video_signal_type_present_flag
        reader.bits(4)  # video_format, video_full_range_flag
        if reader.flag():  # colour_description_present_flag
            reader.bits(24)
    if reader.flag():  # chroma_loc_info_present_flag
        reader.ue()
        reader.ue()


def _vui_frame_rate(reader: BitReader) -> float | None:
    """Read VUI parameters (E.1.1) up to the timing info; None if it is not signalled."""
    skip_vui_picture_fields(reader)
    if not reader.flag():  # timing_info_present_flag
        return None
    num_units_in_tick = reader.bits(32)
    time_scale = reader.bits(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    # One frame is two ticks (field-based clock), Equation E-1 with nuit_field_based_flag 1.
    return time_scale / (2 * num_units_in_tick)


def parse_sps(sps: bytes) -> SpsInfo:
    """Parse an SPS NAL unit (header byte included, emulation prevention still in place)."""
    if not sps or sps[0] & 0x1F != NalType.SPS:
        got = f"type {sps[0] & 0x1F}" if sps else "an empty NAL unit"
        raise H264Error(f"expected an SPS NAL unit (type 7), got {got}")
    reader = BitReader(unescape_rbsp(sps[1:]))
    profile_idc = reader.bits(8)
    constraint_flags = reader.bits(8)
    level_idc = reader.bits(8)
    sps_id = expect_range("seq_parameter_set_id", reader.ue(), 0, 31)

    chroma_format_idc, separate_colour_plane, bit_depth_luma, bit_depth_chroma = 1, False, 8, 8
    if profile_idc in HIGH_PROFILES:
        chroma_format_idc = expect_range("chroma_format_idc", reader.ue(), 0, 3)
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        bit_depth_luma = 8 + expect_range("bit_depth_luma_minus8", reader.ue(), 0, 6)
        bit_depth_chroma = 8 + expect_range("bit_depth_chroma_minus8", reader.ue(), 0, 6)
        reader.bits(1)  # qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for index in range(12 if chroma_format_idc == 3 else 8):
                if reader.flag():  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(reader, 16 if index < 6 else 64)

    expect_range("log2_max_frame_num_minus4", reader.ue(), 0, 12)
    pic_order_cnt_type = expect_range("pic_order_cnt_type", reader.ue(), 0, 2)
    if pic_order_cnt_type == 0:
        expect_range("log2_max_pic_order_cnt_lsb_minus4", reader.ue(), 0, 12)
    elif pic_order_cnt_type == 1:
        reader.bits(1)  # delta_pic_order_always_zero_flag
        reader.se()  # offset_for_non_ref_pic
        reader.se()  # offset_for_top_to_bottom_field
        cycle = expect_range("num_ref_frames_in_pic_order_cnt_cycle", reader.ue(), 0, 255)
        for _ in range(cycle):
            reader.se()
    reader.ue()  # max_num_ref_frames
    reader.bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_in_mbs = reader.ue() + 1
    height_in_map_units = reader.ue() + 1
    frame_mbs_only = reader.flag()
    if not frame_mbs_only:
        reader.bits(1)  # mb_adaptive_frame_field_flag
    reader.bits(1)  # direct_8x8_inference_flag

    width = width_in_mbs * 16
    height = (2 - frame_mbs_only) * height_in_map_units * 16
    if reader.flag():  # frame_cropping_flag
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        # Crop units (7-19..7-22): chroma subsampling, doubled vertically for field coding.
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (2 - frame_mbs_only) * (top + bottom)
        if width <= 0 or height <= 0:
            raise H264Error(
                f"SPS frame cropping {left},{right},{top},{bottom} leaves {width}x{height}; "
                f"expected a positive size inside {width_in_mbs * 16} luma columns"
            )

    frame_rate = None
    if reader.flag():  # vui_parameters_present_flag
        try:
            frame_rate = _vui_frame_rate(reader)
        except H264Error:
            frame_rate = None  # a truncated VUI must not cost us a stream whose size we know

    return SpsInfo(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        seq_parameter_set_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        frame_mbs_only=frame_mbs_only,
        width=width,
        height=height,
        frame_rate=frame_rate,
    )


@dataclass(frozen=True, slots=True)
class AvcDecoderConfig:
    """The fields of an AVCDecoderConfigurationRecord (14496-15 5.3.3.1)."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def _read_parameter_sets(
    record: bytes, offset: int, count: int, what: str
) -> tuple[list[bytes], int]:
    sets = []
    for index in range(count):
        if offset + 2 > len(record):
            raise H264Error(
                f"avcC record ends at byte {len(record)} before the length of {what} #{index}"
            )
        length = int.from_bytes(record[offset : offset + 2], "big")
        offset += 2
        if length == 0 or offset + length > len(record):
            raise H264Error(
                f"avcC {what} #{index} has length {length}; expected 1..{len(record) - offset}"
            )
        sets.append(record[offset : offset + length])
        offset += length
    return sets, offset


def parse_avcc(record: bytes) -> AvcDecoderConfig:
    """Parse an AVCDecoderConfigurationRecord; trailing extension bytes are not interpreted."""
    if len(record) < 7:
        raise H264Error(f"avcC record is {len(record)} bytes; expected at least 7")
    if record[0] != 1:
        raise H264Error(f"avcC configurationVersion is {record[0]}; expected 1")
    nal_length_size = (record[4] & 0x03) + 1
    if nal_length_size == 3:
        raise H264Error("avcC lengthSizeMinusOne is 2; expected 0, 1 or 3 (1, 2 or 4 bytes)")
    sps, offset = _read_parameter_sets(record, 6, record[5] & 0x1F, "SPS")
    if not sps:
        raise H264Error("avcC record has numOfSequenceParameterSets 0; expected at least 1")
    if offset >= len(record):
        raise H264Error(f"avcC record ends at byte {offset} before numOfPictureParameterSets")
    pps, _ = _read_parameter_sets(record, offset + 1, record[offset], "PPS")
    return AvcDecoderConfig(
        profile_idc=record[1],
        constraint_flags=record[2],
        level_idc=record[3],
        nal_length_size=nal_length_size,
        sps=tuple(sps),
        pps=tuple(pps),
    )


def video_config_from_avcc(record: bytes) -> VideoConfig:
    """VideoConfig for an avcC record: profile/level from the record, size from its first SPS."""
    config = parse_avcc(record)
    sps = parse_sps(config.sps[0])
    return VideoConfig(
        codec=VideoCodec.H264,
        record=bytes(record),
        width=sps.width,
        height=sps.height,
        codec_string=(
            f"avc1.{config.profile_idc:02x}{config.constraint_flags:02x}{config.level_idc:02x}"
        ),
    )


def video_config_from_annexb_header(header: bytes) -> VideoConfig:
    """VideoConfig for an encoder's global header (x264's extradata): Annex B SPS and PPS."""
    parameter_sets = split_annexb(header)
    return video_config_from_avcc(
        build_avcc(
            [n for n in parameter_sets if n[0] & 0x1F == NalType.SPS],
            [n for n in parameter_sets if n[0] & 0x1F == NalType.PPS],
        )
    )


def build_avcc(sps: Sequence[bytes], pps: Sequence[bytes], nal_length_size: int = 4) -> bytes:
    """Build an avcC record from SPS and PPS NAL units (e.g. taken from an Annex B stream)."""
    if not sps or not pps:
        raise H264Error(f"avcC needs at least one SPS and one PPS; got {len(sps)} and {len(pps)}")
    if len(sps) > 31 or len(pps) > 255:
        raise H264Error(f"avcC holds at most 31 SPS and 255 PPS; got {len(sps)} and {len(pps)}")
    if nal_length_size not in (1, 2, 4):
        raise H264Error(f"NAL length size is {nal_length_size}; expected 1, 2 or 4")
    info = parse_sps(sps[0])
    out = bytearray(
        [1, info.profile_idc, info.constraint_flags, info.level_idc, 0xFC | (nal_length_size - 1)]
    )
    out.append(0xE0 | len(sps))
    for nal in sps:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps))
    for nal in pps:
        out += len(nal).to_bytes(2, "big") + nal
    if info.profile_idc in _AVCC_EXTENSION_PROFILES:
        out.append(0xFC | info.chroma_format_idc)
        out.append(0xF8 | (info.bit_depth_luma - 8))
        out.append(0xF8 | (info.bit_depth_chroma - 8))
        out.append(0)  # numOfSequenceParameterSetExt
    return bytes(out)


def split_avcc(data: bytes, nal_length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units, checking that the lengths tile the buffer exactly."""
    nalus = []
    offset = 0
    while offset < len(data):
        if offset + nal_length_size > len(data):
            raise H264Error(
                f"{len(data) - offset} trailing bytes at offset {offset}; "
                f"expected a {nal_length_size}-byte NAL unit length"
            )
        length = int.from_bytes(data[offset : offset + nal_length_size], "big")
        offset += nal_length_size
        if length == 0 or offset + length > len(data):
            raise H264Error(
                f"NAL unit length {length} at offset {offset - nal_length_size}; "
                f"expected 1..{len(data) - offset}"
            )
        nalus.append(data[offset : offset + length])
        offset += length
    return nalus


def join_avcc(nalus: Iterable[bytes], nal_length_size: int = 4) -> bytes:
    """Prefix each NAL unit with its big-endian length."""
    out = bytearray()
    limit = 1 << (8 * nal_length_size)
    for nal in nalus:
        if len(nal) >= limit:
            raise H264Error(
                f"NAL unit of {len(nal)} bytes does not fit a {nal_length_size}-byte length"
            )
        out += len(nal).to_bytes(nal_length_size, "big") + nal
    return bytes(out)


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream on 0x000001 start codes.

    Zero bytes before a start code belong to the stream (zero_byte, trailing_zero_8bits), not
    to the NAL unit before it: a NAL unit never ends in 0x00 (rbsp_trailing_bits and the 0x03
    that escapes cabac_zero_words see to that).
    """
    start = data.find(b"\x00\x00\x01")
    if start < 0:
        if data.strip(b"\x00"):
            raise H264Error(f"Annex B data of {len(data)} bytes has no 0x000001 start code")
        return []
    if data[:start].strip(b"\x00"):
        raise H264Error(
            f"Annex B data has {start} bytes before the first start code; expected only zeros"
        )
    nalus = []
    begin = start + 3
    while True:
        end = data.find(b"\x00\x00\x01", begin)
        nal = (data[begin:] if end < 0 else data[begin:end]).rstrip(b"\x00")
        if nal:
            nalus.append(nal)
        if end < 0:
            return nalus
        begin = end + 3


def annexb_to_avcc(data: bytes) -> bytes:
    """Convert an Annex B access unit to AVCC with 4-byte lengths."""
    return join_avcc(split_annexb(data))


def nal_types(avcc_data: bytes, nal_length_size: int = 4) -> list[int]:
    """nal_unit_type of every NAL unit in length-prefixed data."""
    return [nal[0] & 0x1F for nal in split_avcc(avcc_data, nal_length_size)]


def is_idr(avcc_data: bytes, nal_length_size: int = 4) -> bool:
    """True if the access unit holds an IDR slice (a point a decoder can start from)."""
    return NalType.IDR in nal_types(avcc_data, nal_length_size)


@dataclass(frozen=True, slots=True)
class LevelLimits:
    """One row of H.264 Table A-1: the limits a stream of that level stays within."""

    level_idc: int  # ten times the level number: 31 is level 3.1
    max_macroblocks_per_second: int  # MaxMBPS
    max_frame_macroblocks: int  # MaxFS
    max_bit_rate: int  # MaxBR, in units of cpbBrVclFactor bits per second
    max_cpb_size: int  # MaxCPB, in units of cpbBrVclFactor bits


# Table A-1, level 1b left out (its level_idc is ambiguous between profiles).
_LEVELS = (
    LevelLimits(10, 1_485, 99, 64, 175),
    LevelLimits(11, 3_000, 396, 192, 500),
    LevelLimits(12, 6_000, 396, 384, 1_000),
    LevelLimits(13, 11_880, 396, 768, 2_000),
    LevelLimits(20, 11_880, 396, 2_000, 2_000),
    LevelLimits(21, 19_800, 792, 4_000, 4_000),
    LevelLimits(22, 20_250, 1_620, 4_000, 4_000),
    LevelLimits(30, 40_500, 1_620, 10_000, 10_000),
    LevelLimits(31, 108_000, 3_600, 14_000, 14_000),
    LevelLimits(32, 216_000, 5_120, 20_000, 20_000),
    LevelLimits(40, 245_760, 8_192, 20_000, 25_000),
    LevelLimits(41, 245_760, 8_192, 50_000, 62_500),
    LevelLimits(42, 522_240, 8_704, 50_000, 62_500),
    LevelLimits(50, 589_824, 22_080, 135_000, 135_000),
    LevelLimits(51, 983_040, 36_864, 240_000, 240_000),
    LevelLimits(52, 2_073_600, 36_864, 240_000, 240_000),
    LevelLimits(60, 4_177_920, 139_264, 240_000, 240_000),
    LevelLimits(61, 8_355_840, 139_264, 480_000, 480_000),
    LevelLimits(62, 16_711_680, 139_264, 800_000, 800_000),
)
HIGH_PROFILE = 100
# Table A-2: High profile's cpbBrVclFactor, bits per unit of MaxBR and MaxCPB.
HIGH_BIT_RATE_FACTOR = 1_250


def high_profile_level(
    width: int, height: int, frame_rate: float, max_bit_rate: int, buffer_size: int
) -> int:
    """The smallest level_idc whose Table A-1 limits fit a High profile stream of this
    size, frame rate and VBV (peak bits per second, buffer bits): the level to pin an
    encoder to, so the codec string is known before it encodes anything."""
    if width <= 0 or height <= 0 or not frame_rate > 0:
        raise H264Error(f"size {width}x{height} at {frame_rate} fps has no level")
    width_mbs, height_mbs = -(-width // 16), -(-height // 16)
    frame_mbs = width_mbs * height_mbs
    for level in _LEVELS:
        # A.3.1 h/i: neither dimension may exceed sqrt(8 * MaxFS) macroblocks.
        side = 8 * level.max_frame_macroblocks
        if (
            frame_mbs <= level.max_frame_macroblocks
            and width_mbs**2 <= side
            and height_mbs**2 <= side
            and frame_mbs * frame_rate <= level.max_macroblocks_per_second
            and max_bit_rate <= level.max_bit_rate * HIGH_BIT_RATE_FACTOR
            and buffer_size <= level.max_cpb_size * HIGH_BIT_RATE_FACTOR
        ):
            return level.level_idc
    raise H264Error(
        f"{width}x{height} at {frame_rate} fps and {max_bit_rate} bit/s exceeds level 6.2"
    )
