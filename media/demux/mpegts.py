"""MPEG-TS (ISO/IEC 13818-1) to access units, sans-IO: bytes in any chunking, media out.

`TsDemuxer.feed(data)` takes whatever the transport delivered (SRT hands over 1316-byte
payloads, but nothing here relies on alignment) and returns codec configurations and
access units in the same shape `FlvDemuxer` produces, so one `Publication` serves both.

Scope: the first program of the PAT; H.264 (stream type 0x1B), HEVC (0x24) and AAC in ADTS
(0x0F). Other elementary streams are ignored and listed in `ignored_streams` so the session
can say why its audio is missing. Each video PES is taken as one access unit (what every
live encoder sends); an ADTS PES may hold several frames, each timed from the PES's PTS.

Loss. SRT recovers what it can within its latency; what it cannot shows up here as a
continuity-counter gap, lost sync, a packet with transport_error_indicator, or a PES shorter
than its declared length. The access unit being assembled is then dropped, counted in
`drops` by reason, and the demuxer carries on; it never raises on input. A dropped video
frame is referenced by the frames after it, so video is also dropped (and counted) until the
next keyframe: the picture holds for that gap instead of decoding into garbage (for HEVC,
the RASL pictures after that keyframe go too: they reference the lost GOP). Audio frames
are independent: only the broken ones go, and the packager keeps the hole so sync holds.
Drops are counted per broken PES: a frame whose start was lost together with the end of
the frame before it was never seen, so it is not counted.

The end. An SRT caller that closes discards what it had not sent yet, so a stream may stop
inside a PES. An audio PES declares its length, so a short one shows; a video PES usually
does not (length 0: it runs to the next PES of its PID), so the last one counts as whole
only when its last packet was padded (muxers pad a PES's last packet with adaptation field
stuffing when its payload does not fill it) or packets of another elementary stream came
after it (muxers write each PES's packets together), and is otherwise dropped rather than
passed on as a frame that decodes into garbage. Such a PES is counted as `ENDED_MID_PES`,
apart from loss on the way.

Order. Encoders interleave audio and video PES loosely (ffmpeg's muxer bundles ~0.2 s of
audio per PES), so audio may arrive after video that follows it in time. Units are released
in decode-time order across tracks, holding each at most `MAX_INTERLEAVE_TICKS`; the packager
then sees what an RTMP publisher gives it. That includes the start: FLV sends both sequence
headers before any frame, and the packager builds its init segment from the configurations
it has when the first keyframe comes, so every track's first configuration is released ahead
of the first unit (the first audio PES usually starts after the first keyframe: in decode
order alone, the init would have no audio and the whole audio track would be lost). Video
decode times only ever increase in the output: a frame that would go backwards is dropped
and counted.

Timestamps are 33-bit and wrap every 26.5 hours; they are unwrapped onto one monotonic
integer timeline (90 kHz), so a stream crossing the wrap continues seamlessly, and so does
one whose encoder restarts its clock mid-connection.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from media.codecs import hevc
from media.codecs.aac import AacError, audio_config_from_adts, parse_adts_header
from media.codecs.h264 import H264Error, build_avcc, join_avcc, split_annexb, video_config_from_avcc
from media.demux.timestamps import TimestampUnwrapper
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind, VideoConfig

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
NULL_PID = 0x1FFF
# PIDs below carry tables (PAT, CAT, SDT...), which muxers insert even inside a PES.
FIRST_ELEMENTARY_PID = 0x20
TIMESTAMP_BITS = 33
TIMESTAMP_MODULUS = 1 << TIMESTAMP_BITS
AAC_FRAME_SAMPLES = 1024
# Longest a unit waits for the other track before it is released anyway.
MAX_INTERLEAVE_TICKS = 2 * CLOCK_HZ
# A PES larger than this is not a frame of a live stream; it is dropped as broken.
MAX_PES_BYTES = 16 * 1024 * 1024
PSI_MAX_SECTION_BYTES = 1024
# Consecutive timestamps (across tracks, and pts vs dts) never differ by this much in one
# clock; a larger step is a new clock (see `TimestampUnwrapper`).
MAX_TIMESTAMP_JUMP_TICKS = 10 * CLOCK_HZ
# Where a new clock continues: after the old one by more than any B-frame reordering delay,
# so the first new frame's decode time is still later than the last old one.
RESTART_GAP_TICKS = CLOCK_HZ // 2


class StreamType(IntEnum):
    H264 = 0x1B
    HEVC = 0x24
    AAC_ADTS = 0x0F


STREAM_TYPE_NAMES = {
    0x01: "MPEG-1 video",
    0x02: "MPEG-2 video",
    0x03: "MPEG-1 audio (MP2/MP3)",
    0x04: "MPEG-2 audio (MP2/MP3)",
    0x06: "private data (e.g. AC-3, Opus, subtitles)",
    0x0F: "AAC (ADTS)",
    0x10: "MPEG-4 video",
    0x11: "AAC (LATM)",
    0x15: "timed metadata",
    0x1B: "H.264",
    0x24: "HEVC",
    0x81: "AC-3",
    0x87: "E-AC-3",
}


class DropReason(StrEnum):
    CONTINUITY = "continuity counter gap"
    LOST_SYNC = "lost sync"
    TRANSPORT_ERROR = "transport error indicator"
    TRUNCATED_PES = "PES shorter than declared"
    # Not loss on the way: the publisher stopped in the middle of a PES (see the module doc).
    ENDED_MID_PES = "PES cut short by the end of the stream"
    MALFORMED_PES = "malformed PES header"
    UNREADABLE_PAYLOAD = "unreadable elementary stream data"
    AWAITING_KEYFRAME = "video waiting for a keyframe after a loss"
    TIMESTAMP_BACKWARDS = "video decode time went backwards"


@dataclass(frozen=True, slots=True)
class IgnoredStream:
    pid: int
    stream_type: int

    @property
    def description(self) -> str:
        name = STREAM_TYPE_NAMES.get(self.stream_type, "unknown")
        return f"PID {self.pid}: {name} (stream type {self.stream_type:#04x}) is not ingested"


def mpeg_crc32(data: bytes) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, no reflection, no final xor): PSI section checksum."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


@dataclass(slots=True)
class _Pes:
    """A PES being reassembled from TS packet payloads."""

    data: bytearray
    broken: DropReason | None = None
    # Whether the latest packet was padded (see `_stuffed`): where a PES ends.
    padded: bool = False


@dataclass(slots=True)
class _Track:
    """One elementary stream we ingest."""

    pid: int
    stream_type: StreamType
    kind: TrackKind
    pes: _Pes | None = None
    last_cc: int | None = None
    config: VideoConfig | AudioConfig | None = None
    awaiting_keyframe: bool = False
    skip_leading: bool = False
    last_dts: int | None = None
    queue: deque[tuple[int, VideoConfig | AudioConfig | AccessUnit]] = field(default_factory=deque)


class TsDemuxer:
    """MPEG-TS bytes to `VideoConfig` / `AudioConfig` / `AccessUnit` (see the module doc).

    `drops` counts dropped access units by reason; `ignored_streams` lists elementary streams
    of the program that are not ingested; `received_bytes` is everything fed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_sync = False
        self._pmt_pid: int | None = None
        self._pmt_version: int | None = None
        self._sections: dict[int, bytearray] = {}
        self._tracks: dict[int, _Track] = {}
        self._clock = TimestampUnwrapper(
            TIMESTAMP_MODULUS, max_jump=MAX_TIMESTAMP_JUMP_TICKS, restart_gap=RESTART_GAP_TICKS
        )
        self._order = itertools.count()
        self._released_unit = False
        # The PID of the last elementary stream packet: whether the last PES was followed.
        self._last_pid: int | None = None
        self.drops: Counter[str] = Counter()
        self.ignored_streams: list[IgnoredStream] = []
        self.received_bytes = 0

    @property
    def dropped_units(self) -> int:
        return sum(self.drops.values())

    def feed(self, data: bytes) -> list[AccessUnit | VideoConfig | AudioConfig]:
        self.received_bytes += len(data)
        self._buffer += data
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= PACKET_SIZE:
            if buffer[offset] != SYNC_BYTE or not self._in_sync and not self._confirmed(offset):
                offset = self._resync(offset)
                continue
            self._in_sync = True
            self._packet(bytes(buffer[offset : offset + PACKET_SIZE]))
            offset += PACKET_SIZE
        del buffer[:offset]
        return self._release(flushing=False)

    def flush(self) -> list[AccessUnit | VideoConfig | AudioConfig]:
        """End of stream: complete the PES in progress and release everything held."""
        for track in self._tracks.values():
            pes = track.pes
            if pes is not None and pes.broken is None and not self._whole_at_end(track, pes):
                pes.broken = DropReason.ENDED_MID_PES
            self._complete_pes(track)
        self._buffer.clear()
        return self._release(flushing=True)

    def _whole_at_end(self, track: _Track, pes: _Pes) -> bool:
        """Whether the PES in progress when the stream ends is complete (see the module doc)."""
        declared = _declared_pes_end(pes.data)
        if declared is not None:
            return len(pes.data) >= declared
        return pes.padded or track.pid != self._last_pid

    # transport packets

    def _confirmed(self, offset: int) -> bool:
        """Out of sync, a sync byte counts only when the next packet starts with one too
        (or the buffer ends exactly there)."""
        following = offset + PACKET_SIZE
        return following >= len(self._buffer) or self._buffer[following] == SYNC_BYTE

    def _resync(self, offset: int) -> int:
        """Lost sync: skip to the next confirmed sync byte; whatever was being assembled
        is broken because packets went missing in between."""
        if self._in_sync:
            self._in_sync = False
            self._break_all(DropReason.LOST_SYNC)
        buffer = self._buffer
        candidate = buffer.find(SYNC_BYTE, offset + 1)
        while candidate >= 0 and len(buffer) - candidate >= PACKET_SIZE:
            if self._confirmed(candidate):
                return candidate
            candidate = buffer.find(SYNC_BYTE, candidate + 1)
        # Keep only a tail that may still begin a packet.
        return candidate if candidate >= 0 else len(buffer)

    def _break_all(self, reason: DropReason) -> None:
        for track in self._tracks.values():
            self._break(track, reason)
            track.last_cc = None

    def _break(self, track: _Track, reason: DropReason) -> None:
        """Packets of this track went missing: the PES in progress cannot be completed. With
        none in progress a whole frame may have gone; video then waits for a keyframe."""
        if track.pes is not None:
            track.pes.broken = track.pes.broken or reason
        elif track.kind is TrackKind.VIDEO:
            track.awaiting_keyframe = True

    def _packet(self, packet: bytes) -> None:
        transport_error = packet[1] & 0x80
        unit_start = bool(packet[1] & 0x40)
        pid = (packet[1] & 0x1F) << 8 | packet[2]
        scrambled = packet[3] >> 6
        adaptation = (packet[3] >> 4) & 0x03
        cc = packet[3] & 0x0F
        if pid == NULL_PID:
            return
        track = self._tracks.get(pid)
        if transport_error:
            # The header itself may be wrong; only a PID we assemble is worth breaking.
            if track is not None:
                self._break(track, DropReason.TRANSPORT_ERROR)
            return
        payload_start = 4
        discontinuity = False
        if adaptation & 0x02:
            length = packet[4]
            payload_start = 5 + length
            if payload_start > PACKET_SIZE:
                if track is not None:
                    self._break(track, DropReason.MALFORMED_PES)
                return
            discontinuity = length > 0 and bool(packet[5] & 0x80)
        has_payload = bool(adaptation & 0x01)
        payload = packet[payload_start:] if has_payload else b""
        if has_payload and pid >= FIRST_ELEMENTARY_PID and pid != self._pmt_pid:
            self._last_pid = pid  # ignored streams too: they follow a PES just as well
        if track is None:
            if has_payload and not scrambled:
                self._psi_payload(pid, unit_start, payload)
            return
        if not has_payload:
            return
        if track.last_cc is not None and not discontinuity:
            if cc == track.last_cc:
                return  # a duplicate packet, allowed once by the standard
            if cc != (track.last_cc + 1) & 0x0F:
                self._break(track, DropReason.CONTINUITY)
        track.last_cc = cc
        if scrambled:
            self._break(track, DropReason.UNREADABLE_PAYLOAD)
            return
        if unit_start:
            self._complete_pes(track)
            track.pes = _Pes(bytearray(payload))
        elif track.pes is not None:
            track.pes.data += payload
            if len(track.pes.data) > MAX_PES_BYTES:
                track.pes = None
                self._drop(track, DropReason.MALFORMED_PES)
                return
        else:
            return  # the middle of a PES whose start we never saw
        declared = _declared_pes_end(track.pes.data)
        if declared is not None and len(track.pes.data) >= declared:
            self._complete_pes(track)
        elif track.pes is not None:
            track.pes.padded = bool(adaptation & 0x02) and _stuffed(packet)

    # PSI: PAT and PMT

    def _psi_payload(self, pid: int, unit_start: bool, payload: bytes) -> None:
        if pid != PAT_PID and pid != self._pmt_pid:
            return
        if unit_start:
            if not payload or 1 + payload[0] > len(payload):
                return
            data = self._sections[pid] = bytearray(payload[1 + payload[0] :])
        elif (data := self._sections.get(pid)) is not None:
            data += payload
        else:
            return
        if len(data) < 3:
            return
        if data[0] == 0xFF:  # stuffing: no section here
            del self._sections[pid]
            return
        length = 3 + ((data[1] & 0x0F) << 8 | data[2])
        if length > PSI_MAX_SECTION_BYTES:
            del self._sections[pid]
            return
        if len(data) < length:
            return
        del self._sections[pid]
        complete = bytes(data[:length])
        if length < 12 or mpeg_crc32(complete) != 0:
            return  # corrupt section: the next copy comes within a few hundred ms
        if pid == PAT_PID and complete[0] == 0x00:
            self._pat(complete)
        elif pid == self._pmt_pid and complete[0] == 0x02:
            self._pmt(complete)

    def _pat(self, section: bytes) -> None:
        for entry in range(8, len(section) - 4, 4):
            program = section[entry] << 8 | section[entry + 1]
            if program != 0:  # 0 is the network PID
                pmt_pid = (section[entry + 2] & 0x1F) << 8 | section[entry + 3]
                if pmt_pid != self._pmt_pid:
                    self._pmt_pid, self._pmt_version = pmt_pid, None
                return

    def _pmt(self, section: bytes) -> None:
        version = (section[5] >> 1) & 0x1F
        if version == self._pmt_version:
            return
        self._pmt_version = version
        program_info = (section[10] & 0x0F) << 8 | section[11]
        offset = 12 + program_info
        tracks: dict[int, _Track] = {}
        ignored: list[IgnoredStream] = []
        have = set()
        while offset + 5 <= len(section) - 4:
            stream_type = section[offset]
            pid = (section[offset + 1] & 0x1F) << 8 | section[offset + 2]
            info_length = (section[offset + 3] & 0x0F) << 8 | section[offset + 4]
            offset += 5 + info_length
            kind = _kind_of(stream_type)
            if kind is None or kind in have:  # one video and one audio track
                ignored.append(IgnoredStream(pid, stream_type))
                continue
            have.add(kind)
            existing = self._tracks.get(pid)
            if existing is not None and existing.stream_type == stream_type:
                tracks[pid] = existing
            else:
                tracks[pid] = _Track(pid, StreamType(stream_type), kind)
        self._tracks = tracks
        self.ignored_streams = ignored

    # PES and elementary streams

    def _complete_pes(self, track: _Track) -> None:
        pes, track.pes = track.pes, None
        if pes is None:
            return
        if pes.broken is not None:
            self._drop(track, pes.broken)
            return
        parsed = _parse_pes(pes.data)
        if isinstance(parsed, DropReason):
            self._drop(track, parsed)
            return
        pts, dts, payload = parsed
        if pts is None:
            self._drop(track, DropReason.MALFORMED_PES)
            return
        pts = self._clock.unwrap(pts)
        dts = pts if dts is None else self._clock.unwrap(dts)
        if track.kind is TrackKind.VIDEO:
            self._video(track, pts, dts, payload)
        else:
            self._audio(track, pts, payload)

    def _drop(self, track: _Track, reason: DropReason) -> None:
        self.drops[reason.value] += 1
        if track.kind is TrackKind.VIDEO:
            track.awaiting_keyframe = True

    def _video(self, track: _Track, pts: int, dts: int, payload: bytes) -> None:
        codec = _VIDEO_CODECS[track.stream_type]
        try:
            nalus = split_annexb(payload)
        except H264Error:
            self._drop(track, DropReason.UNREADABLE_PAYLOAD)
            return
        parameter_sets: dict[int, list[bytes]] = {}
        picture: list[bytes] = []
        types: list[int] = []
        keyframe = False
        for nal in nalus:
            try:
                nal_type = codec.nal_type(nal)
            except ValueError:
                self._drop(track, DropReason.UNREADABLE_PAYLOAD)
                return
            if nal_type in codec.parameter_set_types:
                parameter_sets.setdefault(nal_type, []).append(nal)
            elif nal_type not in codec.dropped_types:
                picture.append(nal)
                types.append(nal_type)
                keyframe |= codec.is_keyframe(nal_type)
        if parameter_sets:
            try:
                config = codec.config(parameter_sets)
            except ValueError:
                self._drop(track, DropReason.UNREADABLE_PAYLOAD)
                return
            if config is not None and config != track.config:
                track.config = config
                self._enqueue(track, dts, config)
        if not picture or track.config is None:
            return
        if track.awaiting_keyframe and not keyframe:
            self.drops[DropReason.AWAITING_KEYFRAME.value] += 1
            return
        if keyframe:
            # Leading pictures after a resumption point may reference what was lost.
            track.skip_leading = track.awaiting_keyframe
        elif track.skip_leading and codec.is_skipped_leading(types):
            self.drops[DropReason.AWAITING_KEYFRAME.value] += 1
            return
        else:
            track.skip_leading = False
        if track.last_dts is not None and dts <= track.last_dts:
            self._drop(track, DropReason.TIMESTAMP_BACKWARDS)
            return
        track.awaiting_keyframe = False
        track.last_dts = dts
        self._enqueue(
            track, dts, AccessUnit(TrackKind.VIDEO, dts, pts, keyframe, join_avcc(picture))
        )

    def _audio(self, track: _Track, pts: int, payload: bytes) -> None:
        offset = 0
        index = 0
        while offset < len(payload):
            try:
                header = parse_adts_header(payload, offset)
            except AacError:
                self._drop(track, DropReason.UNREADABLE_PAYLOAD)
                return
            end = offset + header.frame_length
            if end > len(payload) or header.raw_data_blocks != 1:
                self._drop(track, DropReason.UNREADABLE_PAYLOAD)
                return
            try:
                config = audio_config_from_adts(header)
            except AacError:
                self._drop(track, DropReason.UNREADABLE_PAYLOAD)
                return
            at = pts + index * AAC_FRAME_SAMPLES * CLOCK_HZ // header.sample_rate
            if config != track.config:
                track.config = config
                self._enqueue(track, at, config)
            raw = payload[offset + header.header_length : end]
            self._enqueue(track, at, AccessUnit(TrackKind.AUDIO, at, at, True, raw))
            offset = end
            index += 1

    # interleaving

    def _enqueue(
        self, track: _Track, dts: int, item: VideoConfig | AudioConfig | AccessUnit
    ) -> None:
        track.queue.append((dts, item))

    def _release(self, *, flushing: bool) -> list[AccessUnit | VideoConfig | AudioConfig]:
        """Merge the tracks' queues in decode order. A unit goes out once every track has
        something at or after it, or once it has waited `MAX_INTERLEAVE_TICKS` (a track
        that is silent, or has not started, must not stall the other). Until the first unit
        is out, configurations go before any unit (see the module doc)."""
        tracks = list(self._tracks.values())
        out: list[AccessUnit | VideoConfig | AudioConfig] = []
        heads = [self._head(t) for t in tracks if t.queue]
        heapq.heapify(heads)
        newest = max((t.queue[-1][0] for t in tracks if t.queue), default=None)
        while heads:
            _, dts, _, track = heads[0]
            waiting = any(not t.queue for t in tracks)
            overdue = newest is not None and newest - dts > MAX_INTERLEAVE_TICKS
            if waiting and not (flushing or overdue):
                break
            heapq.heappop(heads)
            item = track.queue.popleft()[1]
            self._released_unit |= isinstance(item, AccessUnit)
            out.append(item)
            if track.queue:
                heapq.heappush(heads, self._head(track))
        return out

    def _head(self, track: _Track) -> tuple[bool, int, int, _Track]:
        """The heap key of a track's next item: configurations first until a unit is out,
        then decode time (ties in arrival order)."""
        dts, item = track.queue[0]
        later = self._released_unit or isinstance(item, AccessUnit)
        return later, dts, next(self._order), track


def _kind_of(stream_type: int) -> TrackKind | None:
    if stream_type in _VIDEO_CODECS:
        return TrackKind.VIDEO
    if stream_type == StreamType.AAC_ADTS:
        return TrackKind.AUDIO
    return None


def _stuffed(packet: bytes) -> bool:
    """Whether a packet's adaptation field is padded: a muxer pads only a PES's last packet,
    whose payload would not fill it (a lone PCR is no padding). Private data or an extension
    leave it unknown (False)."""
    length = packet[4]
    if length == 0:
        return True  # the length byte itself is the one byte of padding
    flags = packet[5]
    if flags & 0x03:
        return False
    used = 1 + 6 * bool(flags & 0x10) + 6 * bool(flags & 0x08) + bool(flags & 0x04)
    return length > used


def _declared_pes_end(data: bytearray) -> int | None:
    """Total size of a PES whose header declares its length; None when unbounded or unknown."""
    if len(data) < 6:
        return None
    length = data[4] << 8 | data[5]
    return 6 + length if length else None


def _read_timestamp(data: bytes, offset: int) -> int:
    b = data[offset : offset + 5]
    return (b[0] >> 1 & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def _parse_pes(data: bytearray) -> tuple[int | None, int | None, bytes] | DropReason:
    """(pts, dts, payload) of a complete PES, or why it cannot be read."""
    if len(data) < 9 or data[0:3] != b"\x00\x00\x01":
        return DropReason.MALFORMED_PES
    declared = _declared_pes_end(data)
    if declared is not None and len(data) < declared:
        return DropReason.TRUNCATED_PES
    end = declared if declared is not None else len(data)
    flags = data[7] >> 6
    header_end = 9 + data[8]
    needed = {0b10: 14, 0b11: 19}.get(flags, 9)
    if header_end > end or needed > header_end:
        return DropReason.MALFORMED_PES
    pts = _read_timestamp(data, 9) if flags & 0b10 else None
    dts = _read_timestamp(data, 14) if flags == 0b11 else None
    return pts, dts, bytes(data[header_end:end])


@dataclass(frozen=True, slots=True)
class _VideoCodec:
    """What the demuxer needs to know of a video codec's NAL units."""

    nal_type: Callable[[bytes], int]
    parameter_set_types: frozenset[int]
    dropped_types: frozenset[int]  # access unit delimiters: not part of the sample
    is_keyframe: Callable[[int], bool]
    config: Callable[[dict[int, list[bytes]]], VideoConfig | None]
    # Pictures a decoder drops when it starts at the keyframe before them (HEVC's RASL).
    is_skipped_leading: Callable[[list[int]], bool] = lambda _types: False


H264_IDR, H264_SPS, H264_PPS, H264_AUD = 5, 7, 8, 9


def _h264_config(parameter_sets: dict[int, list[bytes]]) -> VideoConfig | None:
    sps, pps = parameter_sets.get(H264_SPS), parameter_sets.get(H264_PPS)
    if not sps or not pps:
        return None
    return video_config_from_avcc(build_avcc(sps, pps))


def _hevc_config(parameter_sets: dict[int, list[bytes]]) -> VideoConfig | None:
    vps, sps, pps = (parameter_sets.get(kind) for kind in hevc.PARAMETER_SET_TYPES)
    if not vps or not sps or not pps:
        return None
    return hevc.video_config_from_hvcc(hevc.build_hvcc(vps, sps, pps))


_VIDEO_CODECS: dict[int, _VideoCodec] = {
    StreamType.H264: _VideoCodec(
        nal_type=lambda nal: nal[0] & 0x1F,
        parameter_set_types=frozenset({H264_SPS, H264_PPS}),
        dropped_types=frozenset({H264_AUD}),
        is_keyframe=lambda nal_type: nal_type == H264_IDR,
        config=_h264_config,
    ),
    StreamType.HEVC: _VideoCodec(
        nal_type=hevc.nal_type,
        parameter_set_types=frozenset(hevc.PARAMETER_SET_TYPES),
        dropped_types=frozenset({hevc.NalType.AUD}),
        is_keyframe=hevc.is_irap,
        config=_hevc_config,
        is_skipped_leading=lambda types: any(
            kind in (hevc.NalType.RASL_N, hevc.NalType.RASL_R) for kind in types
        ),
    ),
}
