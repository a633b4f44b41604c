"""AAC configuration: AudioSpecificConfig (ISO 14496-3 1.6.2.1) and ADTS (1.A.2.2).

FLV/RTMP and MP4 carry the AudioSpecificConfig once and raw frames after it; MPEG-TS carries
ADTS frames whose 7- or 9-byte headers repeat the same information on every frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from media.types import AudioConfig


class AacError(ValueError):
    """Malformed or unsupported AudioSpecificConfig or ADTS data."""


# samplingFrequencyIndex 0..12; 13 and 14 are reserved, 15 means an explicit 24-bit rate.
SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
# channelConfiguration -> channel count (Table 1.19 with the 14496-3 Amd 4 additions).
CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
OBJECT_TYPE_SBR = 5  # HE-AAC
OBJECT_TYPE_PS = 29  # HE-AAC v2
ADTS_HEADER_SIZE = 7
SAMPLES_PER_FRAME = 1024


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._position = 0

    def read(self, count: int) -> int:
        if self._position + count > self._size:
            raise AacError(
                f"AudioSpecificConfig of {self._size // 8} bytes ends before bit "
                f"{self._position + count}"
            )
        self._position += count
        return (self._value >> (self._size - self._position)) & ((1 << count) - 1)


def _object_type(bits: _Bits) -> int:
    object_type = bits.read(5)
    return 32 + bits.read(6) if object_type == 31 else object_type


def _sample_rate(bits: _Bits) -> int:
    index = bits.read(4)
    if index == 15:
        rate = bits.read(24)
        if rate == 0:
            raise AacError("explicit samplingFrequency is 0; expected a positive rate")
        return rate
    if index >= len(SAMPLE_RATES):
        raise AacError(f"samplingFrequencyIndex is {index}; expected 0..12 or 15")
    return SAMPLE_RATES[index]


def _channels(channel_config: int) -> int:
    if channel_config == 0:
        raise AacError(
            "channelConfiguration 0 (layout in a program_config_element) is not supported; "
            "expected 1..7 or 11..14"
        )
    if channel_config not in CHANNELS:
        raise AacError(f"channelConfiguration is {channel_config}; expected 1..7 or 11..14")
    return CHANNELS[channel_config]


def parse_asc(asc: bytes) -> AudioConfig:
    """Parse an AudioSpecificConfig.

    For explicitly signalled HE-AAC (object type 5 or 29) the object type stays 5/29, so the
    codec string is mp4a.40.5 / mp4a.40.29, and the sample rate is the SBR output rate, at
    which each frame lasts 1024 times the output-to-core rate ratio (2048, or 1024 for
    downsampled SBR).
    """
    bits = _Bits(asc)
    object_type = _object_type(bits)
    if object_type == 0:
        raise AacError("audioObjectType is 0 (null object); expected a coded object type")
    sample_rate = _sample_rate(bits)
    channels = _channels(bits.read(4))
    frame_samples = SAMPLES_PER_FRAME
    if object_type in (OBJECT_TYPE_SBR, OBJECT_TYPE_PS):
        core_rate, sample_rate = sample_rate, _sample_rate(bits)  # extensionSamplingFrequency
        frame_samples = round(SAMPLES_PER_FRAME * sample_rate / core_rate)
    return AudioConfig(
        asc=bytes(asc),
        object_type=object_type,
        sample_rate=sample_rate,
        channels=channels,
        frame_samples=frame_samples,
    )


def build_asc(object_type: int, sample_rate: int, channel_config: int) -> bytes:
    """A minimal AudioSpecificConfig (object type < 31, GASpecificConfig all zero flags)."""
    if not 1 <= object_type <= 30:
        raise AacError(f"object type is {object_type}; expected 1..30")
    if not 0 <= channel_config <= 15:
        raise AacError(f"channel configuration is {channel_config}; expected 0..15")
    if sample_rate in SAMPLE_RATES:
        value, size = (object_type << 4 | SAMPLE_RATES.index(sample_rate)) << 4, 13
    elif 0 < sample_rate < 1 << 24:
        value, size = ((object_type << 4 | 15) << 24 | sample_rate) << 4, 37
    else:
        raise AacError(f"sample rate is {sample_rate}; expected 1..16777215")
    value = (value | channel_config) << 3  # frameLengthFlag, dependsOnCoreCoder, extensionFlag
    size += 3
    padding = -size % 8
    return (value << padding).to_bytes((size + padding) // 8, "big")


@dataclass(frozen=True, slots=True)
class AdtsHeader:
    object_type: int  # profile + 1
    sample_rate: int
    channel_config: int
    frame_length: int  # header included
    header_length: int  # 7, or 9 with CRC
    raw_data_blocks: int

    @property
    def payload_length(self) -> int:
        return self.frame_length - self.header_length


def parse_adts_header(data: bytes, offset: int = 0) -> AdtsHeader:
    """Parse the ADTS fixed and variable header at `offset`."""
    if offset + ADTS_HEADER_SIZE > len(data):
        raise AacError(
            f"{len(data) - offset} bytes at offset {offset}; expected a 7-byte ADTS header"
        )
    header = int.from_bytes(data[offset : offset + ADTS_HEADER_SIZE], "big")

    def field(start: int, size: int) -> int:
        return (header >> (56 - start - size)) & ((1 << size) - 1)

    if field(0, 12) != 0xFFF:
        raise AacError(f"ADTS syncword at offset {offset} is {field(0, 12):#05x}; expected 0xfff")
    if field(13, 2) != 0:
        raise AacError(f"ADTS layer is {field(13, 2)} at offset {offset}; expected 0")
    index = field(18, 4)
    if index >= len(SAMPLE_RATES):
        raise AacError(f"ADTS sampling_frequency_index is {index}; expected 0..12")
    header_length = ADTS_HEADER_SIZE if field(15, 1) else ADTS_HEADER_SIZE + 2
    frame_length = field(30, 13)
    if frame_length <= header_length:
        raise AacError(
            f"ADTS frame_length is {frame_length} at offset {offset}; "
            f"expected more than the {header_length}-byte header"
        )
    return AdtsHeader(
        object_type=field(16, 2) + 1,
        sample_rate=SAMPLE_RATES[index],
        channel_config=field(23, 3),
        frame_length=frame_length,
        header_length=header_length,
        raw_data_blocks=field(54, 2) + 1,
    )


def audio_config_from_adts(header: AdtsHeader) -> AudioConfig:
    """The AudioConfig (with a freshly built ASC) that an ADTS header describes."""
    return parse_asc(build_asc(header.object_type, header.sample_rate, header.channel_config))


def split_adts(data: bytes) -> Iterator[tuple[AdtsHeader, bytes]]:
    """Yield (header, raw AAC frame) for each ADTS frame; data must hold whole frames."""
    offset = 0
    while offset < len(data):
        header = parse_adts_header(data, offset)
        if header.raw_data_blocks != 1:
            raise AacError(
                f"ADTS frame at offset {offset} holds {header.raw_data_blocks} raw data blocks; "
                "expected 1"
            )
        end = offset + header.frame_length
        if end > len(data):
            raise AacError(
                f"ADTS frame at offset {offset} needs {header.frame_length} bytes; "
                f"only {len(data) - offset} remain"
            )
        yield header, data[offset + header.header_length : end]
        offset = end


def build_adts_frame(config: AudioConfig, raw: bytes) -> bytes:
    """Wrap a raw AAC frame in a 7-byte ADTS header (no CRC, buffer fullness 0x7FF: VBR)."""
    if not 1 <= config.object_type <= 4:
        raise AacError(f"ADTS carries object types 1..4; got {config.object_type}")
    if config.sample_rate not in SAMPLE_RATES:
        raise AacError(f"ADTS needs a table sample rate; got {config.sample_rate}")
    channel_config = next(
        (cfg for cfg, count in CHANNELS.items() if count == config.channels and cfg <= 7), None
    )
    if channel_config is None:
        raise AacError(f"ADTS cannot signal {config.channels} channels; expected 1..6 or 8")
    frame_length = ADTS_HEADER_SIZE + len(raw)
    if frame_length >= 1 << 13:
        raise AacError(f"raw AAC frame of {len(raw)} bytes exceeds ADTS's 13-bit frame_length")
    header = 0xFFF << 44 | 1 << 40  # syncword; MPEG-4 ID 0, layer 0, protection_absent 1
    header |= (config.object_type - 1) << 38 | SAMPLE_RATES.index(config.sample_rate) << 34
    header |= channel_config << 30 | frame_length << 13 | 0x7FF << 2
    return header.to_bytes(ADTS_HEADER_SIZE, "big") + raw
