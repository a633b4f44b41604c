"""FLV tag bodies to access units (Adobe FLV spec v10.1, annex E.4), sans-IO.

RTMP audio and video message payloads are FLV tag bodies, so `FlvDemuxer` serves both the
RTMP core (one message in, events out) and `.flv` files read with `iter_flv_tags`.
Only H.264 (codec id 7) and AAC (sound format 10) are supported; anything else is refused
with `UnsupportedCodecError` naming the codec so the publisher can be told why.

Timestamps are 32-bit milliseconds and wrap after 49.7 days; media timestamps (both tracks
share one clock) are unwrapped onto one monotonic timeline, and a jump of more than
`MAX_TIMESTAMP_JUMP_MS` (an encoder restarting its clock) continues `RESTART_GAP_MS` later,
as for MPEG-TS (`media.demux.timestamps`). A smaller step back is passed on as it is: the
segmenter refuses a video decode time that does not increase.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from media.codecs.aac import AacError, parse_asc
from media.codecs.h264 import H264Error, join_avcc, split_avcc, video_config_from_avcc
from media.demux.timestamps import TimestampUnwrapper
from media.types import AccessUnit, AudioConfig, TrackKind, VideoConfig

MS_TO_CLOCK = 90  # 90 kHz ticks per millisecond
TIMESTAMP_MODULUS_MS = 1 << 32
# Consecutive media timestamps of one clock (across tracks) never differ by this much.
MAX_TIMESTAMP_JUMP_MS = 10_000
# Where a restarted clock continues: later than any B-frame reordering delay.
RESTART_GAP_MS = 500


class DemuxError(ValueError):
    """Malformed or truncated media payload."""


class UnsupportedCodecError(DemuxError):
    """Well-formed payload in a codec nebula-live does not ingest."""


VIDEO_CODECS = {
    1: "JPEG",
    2: "Sorenson H.263 (FLV1)",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video v2",
    7: "AVC (H.264)",
    12: "HEVC (non-standard codec id 12)",
    13: "AV1 (non-standard codec id 13)",
}
SOUND_FORMATS = {
    0: "Linear PCM, platform endian",
    1: "ADPCM",
    2: "MP3",
    3: "Linear PCM, little endian",
    4: "Nellymoser 16 kHz mono",
    5: "Nellymoser 8 kHz mono",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    10: "AAC",
    11: "Speex",
    14: "MP3 8 kHz",
    15: "Device-specific sound",
}
CODEC_AVC = 7
SOUND_FORMAT_AAC = 10
SOUND_FORMAT_EX_HEADER = 9  # Enhanced RTMP v2: FourCC follows
FRAME_KEY = 1
FRAME_COMMAND = 5  # video info/command frame: carries no picture
VALID_FRAME_TYPES = range(1, 6)
AVC_SEQUENCE_HEADER, AVC_NALU, AVC_END_OF_SEQUENCE = 0, 1, 2
AAC_SEQUENCE_HEADER, AAC_RAW = 0, 1


def _fourcc(payload: bytes) -> str:
    code = payload[1:5]
    return code.decode("latin-1") if len(code) == 4 else f"truncated FourCC {code!r}"


class FlvDemuxer:
    """Turns FLV audio/video tag bodies into configs and access units.

    Keeps only the last decoder configurations, needed to read NAL unit lengths and useful to
    callers; `video_config`/`audio_config` change whenever a new sequence header arrives.
    """

    def __init__(self) -> None:
        self.video_config: VideoConfig | None = None
        self.audio_config: AudioConfig | None = None
        self._nal_length_size = 4
        self._clock = TimestampUnwrapper(
            TIMESTAMP_MODULUS_MS, max_jump=MAX_TIMESTAMP_JUMP_MS, restart_gap=RESTART_GAP_MS
        )

    @property
    def clock_restarts(self) -> int:
        """Media timestamp jumps taken as the encoder restarting its clock."""
        return self._clock.jumps

    def video(self, timestamp_ms: int, payload: bytes) -> list[AccessUnit | VideoConfig]:
        """One video tag body: [VideoConfig] for a sequence header, [AccessUnit] for NALUs."""
        if not payload:
            raise DemuxError("video payload is empty; expected at least the 1-byte tag header")
        if payload[0] & 0x80:
            raise UnsupportedCodecError(
                f"Enhanced RTMP video (FourCC {_fourcc(payload)}) is not supported; "
                "expected legacy AVC (codec id 7)"
            )
        frame_type, codec_id = payload[0] >> 4, payload[0] & 0x0F
        if frame_type not in VALID_FRAME_TYPES:
            raise DemuxError(f"video frame type is {frame_type}; expected 1..5")
        if codec_id != CODEC_AVC:
            name = VIDEO_CODECS.get(codec_id, f"unknown codec id {codec_id}")
            raise UnsupportedCodecError(
                f"video codec {name} is not supported; expected AVC (codec id 7)"
            )
        if frame_type == FRAME_COMMAND:
            return []
        if len(payload) < 5:
            raise DemuxError(
                f"AVC video payload is {len(payload)} bytes; expected at least 5 "
                "(tag header, AVCPacketType, CompositionTime)"
            )
        packet_type = payload[1]
        body = payload[5:]
        if packet_type == AVC_SEQUENCE_HEADER:
            return [self._video_sequence_header(body)]
        if packet_type == AVC_END_OF_SEQUENCE:
            return []
        if packet_type != AVC_NALU:
            raise DemuxError(f"AVCPacketType is {packet_type}; expected 0, 1 or 2")
        if not body:
            return []
        composition_time = int.from_bytes(payload[2:5], "big", signed=True)
        try:
            nalus = split_avcc(body, self._nal_length_size)
        except H264Error as exc:
            raise DemuxError(f"AVC NALU packet at {timestamp_ms} ms: {exc}") from exc
        data = body if self._nal_length_size == 4 else join_avcc(nalus)
        timestamp_ms = self._clock.unwrap(timestamp_ms)
        return [
            AccessUnit(
                kind=TrackKind.VIDEO,
                dts=timestamp_ms * MS_TO_CLOCK,
                pts=(timestamp_ms + composition_time) * MS_TO_CLOCK,
                keyframe=frame_type == FRAME_KEY,
                data=data,
            )
        ]

    def _video_sequence_header(self, record: bytes) -> VideoConfig:
        try:
            config = video_config_from_avcc(record)
        except H264Error as exc:
            raise DemuxError(f"AVC sequence header: {exc}") from exc
        nal_length_size = (record[4] & 0x03) + 1
        if nal_length_size != 4:
            # Downstream reads 4-byte lengths only; rewrite the record to match the AUs.
            normalized = record[:4] + bytes([record[4] | 0x03]) + record[5:]
            config = video_config_from_avcc(normalized)
        self._nal_length_size = nal_length_size
        self.video_config = config
        return config

    def audio(self, timestamp_ms: int, payload: bytes) -> list[AccessUnit | AudioConfig]:
        """One audio tag body: [AudioConfig] for an AAC sequence header, [AccessUnit] per frame."""
        if not payload:
            raise DemuxError("audio payload is empty; expected at least the 1-byte tag header")
        sound_format = payload[0] >> 4
        if sound_format == SOUND_FORMAT_EX_HEADER:
            raise UnsupportedCodecError(
                f"Enhanced RTMP audio (FourCC {_fourcc(payload)}) is not supported; "
                "expected AAC (sound format 10)"
            )
        if sound_format != SOUND_FORMAT_AAC:
            name = SOUND_FORMATS.get(sound_format, f"reserved sound format {sound_format}")
            raise UnsupportedCodecError(
                f"audio codec {name} is not supported; expected AAC (sound format 10)"
            )
        if len(payload) < 2:
            raise DemuxError("AAC audio payload is 1 byte; expected at least 2 (AACPacketType)")
        packet_type, body = payload[1], payload[2:]
        if packet_type == AAC_SEQUENCE_HEADER:
            try:
                config = parse_asc(body)
            except AacError as exc:
                raise DemuxError(f"AAC sequence header: {exc}") from exc
            self.audio_config = config
            return [config]
        if packet_type != AAC_RAW:
            raise DemuxError(f"AACPacketType is {packet_type}; expected 0 or 1")
        if not body:
            return []
        timestamp = self._clock.unwrap(timestamp_ms) * MS_TO_CLOCK
        return [AccessUnit(TrackKind.AUDIO, timestamp, timestamp, True, body)]


class FlvTagType(IntEnum):
    AUDIO = 8
    VIDEO = 9
    SCRIPT_DATA = 18


@dataclass(frozen=True, slots=True)
class FlvTag:
    tag_type: FlvTagType
    timestamp_ms: int
    payload: bytes


FLV_HEADER_SIZE = 9
TAG_HEADER_SIZE = 11


def iter_flv_tags(data: bytes) -> Iterator[FlvTag]:
    """Yield the tags of a complete FLV file held in memory (for tests and benchmarks)."""
    if len(data) < FLV_HEADER_SIZE + 4 or data[:3] != b"FLV":
        raise DemuxError(f"FLV file starts with {data[:3]!r}; expected b'FLV' and a 9-byte header")
    if data[3] != 1:
        raise DemuxError(f"FLV version is {data[3]}; expected 1")
    offset = int.from_bytes(data[5:9], "big")
    if not FLV_HEADER_SIZE <= offset <= len(data) - 4:
        raise DemuxError(f"FLV DataOffset is {offset}; expected 9..{len(data) - 4}")
    offset += 4  # PreviousTagSize0
    while offset < len(data):
        if offset + TAG_HEADER_SIZE > len(data):
            raise DemuxError(
                f"{len(data) - offset} bytes at offset {offset}; expected an 11-byte tag header"
            )
        header = data[offset : offset + TAG_HEADER_SIZE]
        if header[0] & 0x20:
            raise DemuxError(f"FLV tag at offset {offset} is encrypted (Filter bit set)")
        try:
            tag_type = FlvTagType(header[0] & 0x1F)
        except ValueError:
            raise DemuxError(
                f"FLV tag type {header[0] & 0x1F} at offset {offset}; expected 8, 9 or 18"
            ) from None
        size = int.from_bytes(header[1:4], "big")
        timestamp = header[7] << 24 | int.from_bytes(header[4:7], "big")
        end = offset + TAG_HEADER_SIZE + size
        if end + 4 > len(data):
            raise DemuxError(
                f"FLV tag at offset {offset} declares {size} bytes; the file ends at {len(data)}"
            )
        previous_size = int.from_bytes(data[end : end + 4], "big")
        if previous_size != TAG_HEADER_SIZE + size:
            raise DemuxError(
                f"PreviousTagSize after the tag at offset {offset} is {previous_size}; "
                f"expected {TAG_HEADER_SIZE + size}"
            )
        yield FlvTag(tag_type, timestamp, data[offset + TAG_HEADER_SIZE : end])
        offset = end + 4
