"""Raw AAC-LC frames of digital silence (ISO 14496-3 4.4.2.1 raw_data_block).

Each channel's individual_channel_stream is a long window with max_sfb 0: no scale factor
bands, hence no spectral data, so the inverse MDCT and the overlap-add produce exact zeros.
"""

from __future__ import annotations

from media.codecs.bit_writer import BitWriter

_ID_SCE = 0  # single_channel_element: mono
_ID_CPE = 1  # channel_pair_element: stereo
_ID_END = 7
_ELEMENT_FOR_CHANNELS = {1: _ID_SCE, 2: _ID_CPE}


def _silent_channel_stream(frame: BitWriter) -> None:
    frame.bits(0, 8)  # global_gain: scales no coefficients
    frame.bits(0, 1)  # ics_info: ics_reserved_bit
    frame.bits(0, 2)  # window_sequence ONLY_LONG_SEQUENCE
    frame.bits(0, 1)  # window_shape
    frame.bits(0, 6)  # max_sfb
    frame.flag(False)  # predictor_data_present
    # section_data and scale_factor_data are empty with max_sfb 0
    frame.flag(False)  # pulse_data_present
    frame.flag(False)  # tns_data_present
    frame.flag(False)  # gain_control_data_present


def silent_frame(channels: int) -> bytes:
    """One raw AAC-LC frame (1024 samples per channel) of silence for 1 or 2 channels, as
    channel configurations 1 and 2 lay them out (an SCE, or a CPE without a common window)."""
    if channels not in _ELEMENT_FOR_CHANNELS:
        raise ValueError(f"silent AAC frames are coded for 1 or 2 channels, got {channels}")
    frame = BitWriter()
    frame.bits(_ELEMENT_FOR_CHANNELS[channels], 3)
    frame.bits(0, 4)  # element_instance_tag
    if channels == 2:
        frame.flag(False)  # common_window: each channel has its own ics_info
    for _ in range(channels):
        _silent_channel_stream(frame)
    frame.bits(_ID_END, 3)
    return frame.to_bytes()  # byte_alignment() with zero bits
