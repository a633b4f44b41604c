"""Flat mid-grey H.264 pictures, coded without a single residual coefficient.

Constrained Baseline, 4:2:0, 8 bits, CAVLC. The IDR picture is all I_16x16 macroblocks
with DC prediction and coded_block_pattern 0: a macroblock with no decoded neighbour
predicts 1 << (BitDepth - 1) = 128 (8.3.3, 8.3.4), its neighbours then predict 128 too, so
every sample of Y, Cb and Cr decodes to 128. Each macroblock is the same 8 bits
(mb_type ue(3), intra_chroma_pred_mode ue(0), mb_qp_delta se(0), and the Intra16x16DCLevel
coeff_token "1" for no coefficients at nC 0), so the slice data is one repeated byte.
A P picture is one mb_skip_run over the whole frame: P_Skip with neighbours that have no
motion predicts a zero vector (8.4.1.1), so it copies the grey picture before it.

Every picture is a reference frame (nal_ref_idc != 0) with pic_order_cnt_type 2, so
output order is decode order and frame_num counts pictures since the IDR.

The parameter sets take the highest ids there are, not 0: a decoder that keeps one set of
parameter sets across an EXT-X-MAP change (ffmpeg reading HLS keeps the first init's avcC)
then holds the stream's own and the grey ones side by side, and decodes both sides of a slate.
"""

from __future__ import annotations

from media.codecs.bit_writer import BitWriter
from media.codecs.h264 import NalType, build_avcc, escape_rbsp, high_profile_level

PROFILE_BASELINE = 66
# constraint_set0 and constraint_set1: Constrained Baseline (A.2.1.1), codec avc1.42C0xx.
CONSTRAINED_BASELINE_FLAGS = 0xC0
LOG2_MAX_FRAME_NUM = 16  # the most 7.4.2.1.1 allows; frame_num restarts at every IDR
MAX_FRAME_NUM = 1 << LOG2_MAX_FRAME_NUM
MAX_IDR_PIC_ID = 65535

# One I_16x16_2_0_0 macroblock: ue(3) "00100", ue(0) "1", se(0) "1", coeff_token "1".
_GREY_MACROBLOCK = 0b0010_0111
_SLICE_TYPE_P = 5  # 5..9: every slice of the picture has this type
_SLICE_TYPE_I = 7
_NAL_REF_IDC = 3
SPS_ID = 31  # the most 7.4.2.1.1 allows
PPS_ID = 255  # the most 7.4.2.2 allows


def _macroblocks(width: int, height: int) -> tuple[int, int]:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"grey picture size must be positive and even, got {width}x{height}")
    return -(-width // 16), -(-height // 16)


def _nal_unit(nal_type: NalType, rbsp: BitWriter) -> bytes:
    rbsp.rbsp_trailing_bits()
    return bytes((_NAL_REF_IDC << 5 | nal_type,)) + escape_rbsp(rbsp.to_bytes())


def _sample(nal: bytes) -> bytes:
    """A one-NAL-unit AVCC sample with the 4-byte length that `AccessUnit.data` uses."""
    return len(nal).to_bytes(4, "big") + nal


def _sps(width: int, height: int, frame_rate: float) -> bytes:
    width_mbs, height_mbs = _macroblocks(width, height)
    sps = BitWriter()
    sps.bits(PROFILE_BASELINE, 8)
    sps.bits(CONSTRAINED_BASELINE_FLAGS, 8)
    # Table A-1's frame size and rate limits hold for every profile; the bit rate is ~0.
    sps.bits(high_profile_level(width, height, frame_rate, 0, 0), 8)
    sps.ue(SPS_ID)  # seq_parameter_set_id
    sps.ue(LOG2_MAX_FRAME_NUM - 4)
    sps.ue(2)  # pic_order_cnt_type: order from frame_num
    sps.ue(1)  # max_num_ref_frames
    sps.flag(False)  # gaps_in_frame_num_value_allowed_flag
    sps.ue(width_mbs - 1)
    sps.ue(height_mbs - 1)  # pic_height_in_map_units_minus1
    sps.flag(True)  # frame_mbs_only_flag
    sps.flag(True)  # direct_8x8_inference_flag
    crop_right, crop_bottom = (16 * width_mbs - width) // 2, (16 * height_mbs - height) // 2
    sps.flag(bool(crop_right or crop_bottom))  # frame_cropping_flag, in 4:2:0 units of 2
    if crop_right or crop_bottom:
        for offset in (0, crop_right, 0, crop_bottom):  # left, right, top, bottom
            sps.ue(offset)
    sps.flag(False)  # vui_parameters_present_flag
    return _nal_unit(NalType.SPS, sps)


def _pps() -> bytes:
    pps = BitWriter()
    pps.ue(PPS_ID)  # pic_parameter_set_id
    pps.ue(SPS_ID)  # seq_parameter_set_id
    pps.flag(False)  # entropy_coding_mode_flag: CAVLC
    pps.flag(False)  # bottom_field_pic_order_in_frame_present_flag
    pps.ue(0)  # num_slice_groups_minus1
    pps.ue(0)  # num_ref_idx_l0_default_active_minus1
    pps.ue(0)  # num_ref_idx_l1_default_active_minus1
    pps.flag(False)  # weighted_pred_flag
    pps.bits(0, 2)  # weighted_bipred_idc
    pps.se(0)  # pic_init_qp_minus26
    pps.se(0)  # pic_init_qs_minus26
    pps.se(0)  # chroma_qp_index_offset
    pps.flag(False)  # deblocking_filter_control_present_flag: nothing to filter anyway
    pps.flag(False)  # constrained_intra_pred_flag
    pps.flag(False)  # redundant_pic_cnt_present_flag
    return _nal_unit(NalType.PPS, pps)


def grey_parameter_sets(width: int, height: int, frame_rate: float) -> tuple[bytes, bytes]:
    """The SPS and PPS NAL units of grey pictures of this size, with the smallest level that
    allows that size at `frame_rate`."""
    return _sps(width, height, frame_rate), _pps()


def grey_avcc(width: int, height: int, frame_rate: float) -> bytes:
    """The avcC record of `grey_parameter_sets`."""
    sps, pps = grey_parameter_sets(width, height, frame_rate)
    return build_avcc([sps], [pps])


def _slice_header(slice_type: int, frame_num: int) -> BitWriter:
    header = BitWriter()
    header.ue(0)  # first_mb_in_slice
    header.ue(slice_type)
    header.ue(PPS_ID)  # pic_parameter_set_id
    header.bits(frame_num, LOG2_MAX_FRAME_NUM)
    return header


def grey_idr_picture(width: int, height: int, idr_pic_id: int) -> bytes:
    """An IDR picture (an AVCC sample) that decodes to uniform grey.

    Two IDR pictures in a row must differ in `idr_pic_id` (7.4.3), 0..65535.
    """
    width_mbs, height_mbs = _macroblocks(width, height)
    if not 0 <= idr_pic_id <= MAX_IDR_PIC_ID:
        raise ValueError(f"idr_pic_id must be 0..{MAX_IDR_PIC_ID}, got {idr_pic_id}")
    macroblocks = width_mbs * height_mbs
    idr = _slice_header(_SLICE_TYPE_I, 0)
    idr.ue(idr_pic_id)
    idr.flag(False)  # no_output_of_prior_pics_flag
    idr.flag(False)  # long_term_reference_flag
    idr.se(0)  # slice_qp_delta
    idr.bits(int.from_bytes(bytes((_GREY_MACROBLOCK,)) * macroblocks, "big"), 8 * macroblocks)
    return _sample(_nal_unit(NalType.IDR, idr))


def grey_skip_picture(width: int, height: int, index: int) -> bytes:
    """A P picture (an AVCC sample) of only skipped macroblocks: a copy of the one before.

    `index` is the picture's place after the IDR (1 for the first P picture); its frame_num
    is that modulo `MAX_FRAME_NUM`.
    """
    width_mbs, height_mbs = _macroblocks(width, height)
    if index < 1:
        raise ValueError(
            f"a P picture comes after its IDR picture: index must be >= 1, got {index}"
        )
    skip = _slice_header(_SLICE_TYPE_P, index % MAX_FRAME_NUM)
    skip.flag(False)  # num_ref_idx_active_override_flag
    skip.flag(False)  # ref_pic_list_modification_flag_l0
    skip.flag(False)  # adaptive_ref_pic_marking_mode_flag: sliding window
    skip.se(0)  # slice_qp_delta
    skip.ue(width_mbs * height_mbs)  # mb_skip_run
    return _sample(_nal_unit(NalType.SLICE, skip))
