"""HEVC (H.265) bitstream helpers: NAL unit headers, SPS parsing and hvcC records.

References: ITU-T H.265 (7.3.1.2 NAL unit header, 7.3.2.2 SPS syntax, 7.3.3 profile, tier
and level, 7.3.4 scaling lists, 7.3.7 short-term reference picture sets, E.2.1 VUI) and
ISO/IEC 14496-15 (8.3.3 HEVCDecoderConfigurationRecord, E.3 the `hvc1` codecs parameter).

NAL unit framing is the same as H.264's: `media.codecs.h264`'s `split_annexb`, `join_avcc`,
`split_avcc` and `annexb_to_avcc` serve HEVC too, and so does its RBSP `BitReader`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from media.codecs.h264 import (
    BitReader,
    expect_range,
    skip_vui_picture_fields,
    split_avcc,
    unescape_rbsp,
)
from media.types import VideoCodec, VideoConfig


class HevcError(ValueError):
    """Malformed or unsupported HEVC data (NAL unit header, SPS or hvcC record)."""


class NalType(IntEnum):
    RASL_N = 8
    RASL_R = 9
    BLA_W_LP = 16
    IDR_W_RADL = 19
    IDR_N_LP = 20
    CRA = 21
    VPS = 32
    SPS = 33
    PPS = 34
    AUD = 35
    END_OF_SEQUENCE = 36
    END_OF_BITSTREAM = 37
    FILLER = 38
    PREFIX_SEI = 39
    SUFFIX_SEI = 40


PARAMETER_SET_TYPES = (NalType.VPS, NalType.SPS, NalType.PPS)
_RASL_TYPES = (NalType.RASL_N, NalType.RASL_R)
_IRAP_TYPES = range(16, 24)  # BLA, IDR, CRA and the reserved IRAP types 22..23
_HVCC_HEADER_SIZE = 23
_PROFILE_SPACE_LETTERS = ("", "A", "B", "C")
_MAX_SHORT_TERM_REF_PIC_SETS = 64
_MAX_DELTA_POCS = 16  # sps_max_dec_pic_buffering_minus1 + 1 is at most MaxDpbSize = 16


def nal_type(nal: bytes) -> int:
    """nal_unit_type from the 2-byte NAL unit header (7.3.1.2)."""
    if len(nal) < 2:
        raise HevcError(f"HEVC NAL unit of {len(nal)} bytes; expected a 2-byte header at least")
    if nal[0] & 0x80:
        raise HevcError(f"HEVC NAL unit header {nal[:2].hex()} has forbidden_zero_bit set")
    return (nal[0] >> 1) & 0x3F


def is_irap(nal_type: int) -> bool:
    """True for an intra random access point (BLA, IDR, CRA): a decoder can start there."""
    return nal_type in _IRAP_TYPES


def skipped_leading_pictures(samples: Sequence[bytes]) -> int:
    """How many samples a decoder starting at the first IRAP drops without output.

    Open-GOP encoders (x265's default) start GOPs on a CRA followed by RASL pictures that
    reference the previous GOP; a decoder that starts at that CRA discards them (8.1.3,
    NoRaslOutputFlag). `samples` hold 4-byte length-prefixed NAL units, in decode order.
    """
    skipped = 0
    seen_irap = False
    for sample in samples:
        types = [nal_type(nal) for nal in split_avcc(sample)]
        if any(is_irap(kind) for kind in types):
            if seen_irap:
                break
            seen_irap = True
        elif seen_irap and any(kind in _RASL_TYPES for kind in types):
            skipped += 1
    return skipped


@dataclass(frozen=True, slots=True)
class HevcSps:
    """What the packager needs from a sequence parameter set."""

    profile_space: int
    tier_flag: int
    profile_idc: int
    profile_compatibility_flags: int  # 32 bits, flag[0] the most significant
    constraint_indicator_flags: int  # 48 bits, general_progressive_source_flag first
    level_idc: int
    max_sub_layers: int
    temporal_id_nesting: bool
    seq_parameter_set_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int  # after conformance window cropping
    height: int  # after conformance window cropping
    frame_rate: float | None  # from VUI timing info, None when absent


def _range(name: str, value: int, low: int, high: int) -> int:
    return expect_range(name, value, low, high, HevcError)


def _skip_sub_layer_profile_tier_level(reader: BitReader, max_sub_layers_minus1: int) -> None:
    """The sub-layer part of profile_tier_level() (7.3.3), after the general part."""
    present = [(reader.flag(), reader.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        reader.bits(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            reader.bits(88)  # profile space .. sub_layer_inbld_flag
        if level_present:
            reader.bits(8)  # sub_layer_level_idc


def _skip_scaling_list_data(reader: BitReader) -> None:
    """scaling_list_data() (7.3.4)."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not reader.flag():  # scaling_list_pred_mode_flag
                _range("scaling_list_pred_matrix_id_delta", reader.ue(), 0, 5)
                continue
            if size_id > 1:
                _range("scaling_list_dc_coef_minus8", reader.se(), -7, 247)
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                _range("scaling_list_delta_coef", reader.se(), -128, 127)


def _short_term_ref_pic_set(reader: BitReader, index: int, delta_pocs: list[int]) -> int:
    """Read st_ref_pic_set(index) (7.3.7) and return its NumDeltaPocs."""
    if index > 0 and reader.flag():  # inter_ref_pic_set_prediction_flag
        # delta_idx_minus1 is only present in slice headers, so the reference is the previous set.
        reader.bits(1)  # delta_rps_sign
        _range("abs_delta_rps_minus1", reader.ue(), 0, 2**15 - 1)
        count = 0
        for _ in range(delta_pocs[index - 1] + 1):
            used_by_curr_pic = reader.flag()
            if used_by_curr_pic or reader.flag():  # use_delta_flag
                count += 1
        return _range("NumDeltaPocs", count, 0, _MAX_DELTA_POCS)
    negative = _range("num_negative_pics", reader.ue(), 0, _MAX_DELTA_POCS)
    positive = _range("num_positive_pics", reader.ue(), 0, _MAX_DELTA_POCS - negative)
    for _ in range(negative + positive):
        _range("delta_poc_minus1", reader.ue(), 0, 2**15 - 1)
        reader.bits(1)  # used_by_curr_pic_flag
    return negative + positive


def _vui_frame_rate(reader: BitReader) -> float | None:
    """Read VUI parameters (E.2.1) up to the timing info; None if it is not signalled."""
    skip_vui_picture_fields(reader)
    reader.bits(3)  # neutral_chroma_indication, field_seq, frame_field_info_present
    if reader.flag():  # default_display_window_flag
        for _ in range(4):
            reader.ue()
    if not reader.flag():  # vui_timing_info_present_flag
        return None
    num_units_in_tick = reader.bits(32)
    time_scale = reader.bits(32)
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    return time_scale / num_units_in_tick  # one picture per tick in HEVC (E.3.1)


def parse_sps(sps: bytes) -> HevcSps:
    """Parse an SPS NAL unit (2-byte header included, emulation prevention still in place)."""
    if nal_type(sps) != NalType.SPS:
        raise HevcError(f"expected an HEVC SPS NAL unit (type 33), got type {nal_type(sps)}")
    reader = BitReader(unescape_rbsp(sps[2:]), HevcError)
    reader.bits(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = _range("sps_max_sub_layers_minus1", reader.bits(3), 0, 6)
    temporal_id_nesting = reader.flag()
    profile_space = reader.bits(2)
    tier_flag = reader.bits(1)
    profile_idc = reader.bits(5)
    compatibility_flags = reader.bits(32)
    constraint_flags = reader.bits(48)
    level_idc = reader.bits(8)
    _skip_sub_layer_profile_tier_level(reader, max_sub_layers_minus1)
    sps_id = _range("sps_seq_parameter_set_id", reader.ue(), 0, 15)
    chroma_format_idc = _range("chroma_format_idc", reader.ue(), 0, 3)
    separate_colour_plane = chroma_format_idc == 3 and reader.flag()
    coded_width = _range("pic_width_in_luma_samples", reader.ue(), 1, 65535)
    coded_height = _range("pic_height_in_luma_samples", reader.ue(), 1, 65535)
    width, height = coded_width, coded_height
    if reader.flag():  # conformance_window_flag
        left, right, top, bottom = reader.ue(), reader.ue(), reader.ue(), reader.ue()
        # Crop units (7-5, Table 6-1): chroma subsampling, or 1 without a chroma array.
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_width = 2 if chroma_array_type in (1, 2) else 1
        sub_height = 2 if chroma_array_type == 1 else 1
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
        if width <= 0 or height <= 0:
            raise HevcError(
                f"SPS conformance window {left},{right},{top},{bottom} leaves {width}x{height}; "
                f"expected a positive size inside {coded_width}x{coded_height}"
            )
    bit_depth_luma = 8 + _range("bit_depth_luma_minus8", reader.ue(), 0, 8)
    bit_depth_chroma = 8 + _range("bit_depth_chroma_minus8", reader.ue(), 0, 8)
    log2_max_poc_lsb = 4 + _range("log2_max_pic_order_cnt_lsb_minus4", reader.ue(), 0, 12)
    ordering_info_present = reader.flag()
    for _ in range(
        0 if ordering_info_present else max_sub_layers_minus1, max_sub_layers_minus1 + 1
    ):
        _range("sps_max_dec_pic_buffering_minus1", reader.ue(), 0, _MAX_DELTA_POCS - 1)
        _range("sps_max_num_reorder_pics", reader.ue(), 0, _MAX_DELTA_POCS - 1)
        reader.ue()  # sps_max_latency_increase_plus1
    _range("log2_min_luma_coding_block_size_minus3", reader.ue(), 0, 3)
    _range("log2_diff_max_min_luma_coding_block_size", reader.ue(), 0, 3)
    _range("log2_min_luma_transform_block_size_minus2", reader.ue(), 0, 3)
    _range("log2_diff_max_min_luma_transform_block_size", reader.ue(), 0, 3)
    _range("max_transform_hierarchy_depth_inter", reader.ue(), 0, 4)
    _range("max_transform_hierarchy_depth_intra", reader.ue(), 0, 4)
    if reader.flag() and reader.flag():  # scaling_list_enabled, sps_scaling_list_data_present
        _skip_scaling_list_data(reader)
    reader.bits(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if reader.flag():  # pcm_enabled_flag
        reader.bits(8)  # pcm_sample_bit_depth_luma_minus1, pcm_sample_bit_depth_chroma_minus1
        reader.ue()  # log2_min_pcm_luma_coding_block_size_minus3
        reader.ue()  # log2_diff_max_min_pcm_luma_coding_block_size
        reader.bits(1)  # pcm_loop_filter_disabled_flag
    set_count = _range("num_short_term_ref_pic_sets", reader.ue(), 0, _MAX_SHORT_TERM_REF_PIC_SETS)
    delta_pocs: list[int] = []
    for index in range(set_count):
        delta_pocs.append(_short_term_ref_pic_set(reader, index, delta_pocs))
    if reader.flag():  # long_term_ref_pics_present_flag
        for _ in range(_range("num_long_term_ref_pics_sps", reader.ue(), 0, 32)):
            reader.bits(log2_max_poc_lsb + 1)  # lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt
    reader.bits(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag

    frame_rate = None
    if reader.flag():  # vui_parameters_present_flag
        try:
            frame_rate = _vui_frame_rate(reader)
        except HevcError:
            frame_rate = None  # a truncated VUI must not cost us a stream whose size we know

    return HevcSps(
        profile_space=profile_space,
        tier_flag=tier_flag,
        profile_idc=profile_idc,
        profile_compatibility_flags=compatibility_flags,
        constraint_indicator_flags=constraint_flags,
        level_idc=level_idc,
        max_sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nesting=temporal_id_nesting,
        seq_parameter_set_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        frame_rate=frame_rate,
    )


@dataclass(frozen=True, slots=True)
class HevcDecoderConfig:
    """The fields of an HEVCDecoderConfigurationRecord (14496-15 8.3.3.1)."""

    profile_space: int
    tier_flag: int
    profile_idc: int
    profile_compatibility_flags: int
    constraint_indicator_flags: int
    level_idc: int
    min_spatial_segmentation_idc: int
    parallelism_type: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    constant_frame_rate: int
    num_temporal_layers: int
    temporal_id_nested: bool
    nal_length_size: int
    arrays: tuple[tuple[int, bool, tuple[bytes, ...]], ...]  # (NAL type, complete, NAL units)

    def nal_units(self, nal_unit_type: int) -> list[bytes]:
        """Every NAL unit of one type, across the arrays, in record order."""
        return [n for kind, _, nalus in self.arrays if kind == nal_unit_type for n in nalus]

    @property
    def codec_string(self) -> str:
        """RFC 6381 codecs parameter for an `hvc1` sample entry (14496-15 E.3)."""
        compatibility = int(f"{self.profile_compatibility_flags:032b}"[::-1], 2)
        constraints = self.constraint_indicator_flags.to_bytes(6, "big").rstrip(b"\x00")
        return ".".join(
            [
                "hvc1",
                f"{_PROFILE_SPACE_LETTERS[self.profile_space]}{self.profile_idc}",
                f"{compatibility:X}",
                f"{'H' if self.tier_flag else 'L'}{self.level_idc}",
                *(f"{byte:X}" for byte in constraints),
            ]
        )


def parse_hvcc(record: bytes) -> HevcDecoderConfig:
    """Parse an HEVCDecoderConfigurationRecord, checking that its arrays tile it exactly."""
    if len(record) < _HVCC_HEADER_SIZE:
        raise HevcError(f"hvcC record is {len(record)} bytes; expected at least 23")
    if record[0] != 1:
        raise HevcError(f"hvcC configurationVersion is {record[0]}; expected 1")
    if record[21] & 0x03 == 2:
        raise HevcError("hvcC lengthSizeMinusOne is 2; expected 0, 1 or 3 (1, 2 or 4 bytes)")
    arrays = []
    offset = _HVCC_HEADER_SIZE
    for index in range(record[22]):
        if offset + 3 > len(record):
            raise HevcError(
                f"hvcC record ends at byte {len(record)} inside the header of array #{index}"
            )
        header = record[offset]
        count = int.from_bytes(record[offset + 1 : offset + 3], "big")
        offset += 3
        nalus = []
        for position in range(count):
            length = int.from_bytes(record[offset : offset + 2], "big")
            if length == 0 or offset + 2 + length > len(record):
                raise HevcError(
                    f"hvcC array #{index} NAL unit #{position} at byte {offset} has length "
                    f"{length}; expected 1..{max(len(record) - offset - 2, 0)}"
                )
            nalus.append(record[offset + 2 : offset + 2 + length])
            offset += 2 + length
        arrays.append((header & 0x3F, bool(header & 0x80), tuple(nalus)))
    if offset != len(record):
        raise HevcError(f"hvcC record has {len(record) - offset} bytes after its last array")
    return HevcDecoderConfig(
        profile_space=record[1] >> 6,
        tier_flag=(record[1] >> 5) & 1,
        profile_idc=record[1] & 0x1F,
        profile_compatibility_flags=int.from_bytes(record[2:6], "big"),
        constraint_indicator_flags=int.from_bytes(record[6:12], "big"),
        level_idc=record[12],
        min_spatial_segmentation_idc=int.from_bytes(record[13:15], "big") & 0x0FFF,
        parallelism_type=record[15] & 0x03,
        chroma_format_idc=record[16] & 0x03,
        bit_depth_luma=(record[17] & 0x07) + 8,
        bit_depth_chroma=(record[18] & 0x07) + 8,
        avg_frame_rate=int.from_bytes(record[19:21], "big"),
        constant_frame_rate=record[21] >> 6,
        num_temporal_layers=(record[21] >> 3) & 0x07,
        temporal_id_nested=bool(record[21] & 0x04),
        nal_length_size=(record[21] & 0x03) + 1,
        arrays=tuple(arrays),
    )


def build_hvcc(vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """An hvcC record for an `hvc1` sample entry: 4-byte NAL lengths, complete arrays.

    Profile, tier, level, chroma format and bit depths come from the first SPS.
    min_spatial_segmentation_idc and parallelismType are written as 0 ("unknown"), which
    14496-15 allows and which costs a decoder nothing but a hint.
    """
    arrays = dict(zip(PARAMETER_SET_TYPES, (vps, sps, pps), strict=True))
    for kind, nalus in arrays.items():
        name = kind.name
        if not nalus:
            raise HevcError(f"hvcC needs at least one {name}; got none")
        if len(nalus) > 0xFFFF:
            raise HevcError(f"hvcC holds at most 65535 {name}; got {len(nalus)}")
        for nal in nalus:
            if nal_type(nal) != kind:
                raise HevcError(
                    f"hvcC {name} array got NAL unit type {nal_type(nal)}; expected {int(kind)}"
                )
            if len(nal) > 0xFFFF:
                raise HevcError(f"{name} of {len(nal)} bytes does not fit hvcC's 2-byte length")
    info = parse_sps(sps[0])
    out = bytearray([1, info.profile_space << 6 | info.tier_flag << 5 | info.profile_idc])
    out += info.profile_compatibility_flags.to_bytes(4, "big")
    out += info.constraint_indicator_flags.to_bytes(6, "big")
    out.append(info.level_idc)
    out += (0xF000).to_bytes(2, "big")  # reserved, min_spatial_segmentation_idc = 0
    out.append(0xFC)  # reserved, parallelismType = 0
    out.append(0xFC | info.chroma_format_idc)
    out.append(0xF8 | (info.bit_depth_luma - 8))
    out.append(0xF8 | (info.bit_depth_chroma - 8))
    out += bytes(2)  # avgFrameRate = 0: unspecified
    # constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne = 3
    out.append(info.max_sub_layers << 3 | info.temporal_id_nesting << 2 | 3)
    out.append(len(arrays))  # numOfArrays
    for kind, nalus in arrays.items():
        out.append(0x80 | kind)  # array_completeness = 1, reserved = 0
        out += len(nalus).to_bytes(2, "big")
        for nal in nalus:
            out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def video_config_from_hvcc(hvcc: bytes) -> VideoConfig:
    """VideoConfig for an hvcC record: profile/level from the record, size from its first SPS."""
    config = parse_hvcc(hvcc)
    sps = config.nal_units(NalType.SPS)
    if not sps:
        raise HevcError("hvcC record has no SPS array; expected at least one SPS")
    info = parse_sps(sps[0])
    return VideoConfig(
        codec=VideoCodec.HEVC,
        record=bytes(hvcc),
        width=info.width,
        height=info.height,
        codec_string=config.codec_string,
    )
