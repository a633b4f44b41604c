"""MPEG-TS to access units, checked against ffprobe on files the ffmpeg CLI made, and broken."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.demux.mpegts import (
    MAX_TIMESTAMP_JUMP_TICKS,
    PACKET_SIZE,
    RESTART_GAP_TICKS,
    TIMESTAMP_MODULUS,
    DropReason,
    TsDemuxer,
    mpeg_crc32,
)
from media.demux.timestamps import TimestampUnwrapper
from media.types import AccessUnit, AudioConfig, TrackKind, VideoCodec, VideoConfig
from tests.media import make_ts_source

Item = AccessUnit | VideoConfig | AudioConfig


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ts")


@pytest.fixture(scope="module")
def h264_ts(media: Path) -> Path:
    return make_ts_source(media / "h264.ts", seconds=3, size="320x240")


@pytest.fixture(scope="module")
def hevc_ts(media: Path) -> Path:
    return make_ts_source(media / "hevc.ts", seconds=3, size="320x240", video_codec="libx265")


@pytest.fixture(scope="module")
def wrap_ts(media: Path) -> Path:
    """Starts 1.5 s before the 33-bit PTS wrap (95443.7 s) and runs across it."""
    return make_ts_source(media / "wrap.ts", seconds=3, size="320x240", ts_offset=95442.2)


@pytest.fixture(scope="module")
def mp2_ts(media: Path) -> Path:
    return make_ts_source(media / "mp2.ts", seconds=2, size="320x240", audio_codec="mp2")


def _demux(data: bytes, chunks: list[int] | None = None) -> tuple[list[Item], TsDemuxer]:
    demuxer = TsDemuxer()
    items: list[Item] = []
    offset = 0
    for size in chunks or [len(data)]:
        items += demuxer.feed(data[offset : offset + size])
        offset += size
    items += demuxer.feed(data[offset:])
    return items + demuxer.flush(), demuxer


def _units(items: list[Item], kind: TrackKind) -> list[AccessUnit]:
    return [i for i in items if isinstance(i, AccessUnit) and i.kind is kind]


def _ffprobe_packets(path: Path) -> dict[str, list[dict]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_packets", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    probe = json.loads(out)
    kinds = {s["index"]: s["codec_type"] for s in probe["streams"]}
    packets: dict[str, list[dict]] = {"video": [], "audio": []}
    for packet in probe["packets"]:
        packets[kinds[packet["stream_index"]]].append(packet)
    return packets


def _relative(values: list[int]) -> list[int]:
    return [v - values[0] for v in values]


def _assert_matches_ffprobe(path: Path, items: list[Item]) -> None:
    """Same frames, same decode and presentation times, same keyframes as ffprobe reports."""
    packets = _ffprobe_packets(path)
    video, audio = _units(items, TrackKind.VIDEO), _units(items, TrackKind.AUDIO)
    assert len(video) == len(packets["video"]) > 0
    assert len(audio) == len(packets["audio"]) > 0
    origin = video[0].dts
    probe_origin = int(packets["video"][0]["dts"])
    assert [(u.dts - origin, u.pts - origin, u.keyframe) for u in video] == [
        (int(p["dts"]) - probe_origin, int(p["pts"]) - probe_origin, "K" in p["flags"])
        for p in packets["video"]
    ]
    assert [u.dts - origin for u in audio] == [
        int(p["pts"]) - probe_origin for p in packets["audio"]
    ]
    # ffmpeg keeps each frame's 7-byte ADTS header in the packet; we keep the raw frame.
    assert [len(u.data) + 7 for u in audio] == [int(p["size"]) for p in packets["audio"]]


def test_h264_and_aac_units_match_ffprobe_packets(h264_ts: Path) -> None:
    items, demuxer = _demux(h264_ts.read_bytes())
    _assert_matches_ffprobe(h264_ts, items)
    configs = [i for i in items if not isinstance(i, AccessUnit)]
    [video_config, audio_config] = configs  # repeated parameter sets are no new config
    assert video_config.codec is VideoCodec.H264
    assert (video_config.width, video_config.height) == (320, 240)
    assert (audio_config.sample_rate, audio_config.channels) == (48000, 2)
    assert demuxer.drops == {}
    assert demuxer.ignored_streams == []
    video = _units(items, TrackKind.VIDEO)
    assert sum(u.keyframe for u in video) == 3
    assert any(u.pts != u.dts for u in video)  # B-frames
    # Parameter sets and delimiters are in the config, not the samples: no NAL 7, 8 or 9.
    for unit in video:
        offset, types = 0, []
        while offset < len(unit.data):
            size = int.from_bytes(unit.data[offset : offset + 4], "big")
            types.append(unit.data[offset + 4] & 0x1F)
            offset += 4 + size
        assert offset == len(unit.data)
        assert not {7, 8, 9} & set(types)


def test_hevc_and_aac_units_match_ffprobe_packets(hevc_ts: Path) -> None:
    items, demuxer = _demux(hevc_ts.read_bytes())
    _assert_matches_ffprobe(hevc_ts, items)
    [video_config] = [i for i in items if isinstance(i, VideoConfig)]
    assert video_config.codec is VideoCodec.HEVC
    assert video_config.codec_string.startswith("hvc1.")
    assert demuxer.drops == {}


def test_output_is_in_decode_order_across_tracks(h264_ts: Path) -> None:
    """ffmpeg bundles audio into PES well behind the video; we interleave as RTMP would."""
    items, _ = _demux(h264_ts.read_bytes())
    dts = [i.dts for i in items if isinstance(i, AccessUnit)]
    assert dts == sorted(dts)


def test_every_track_is_configured_before_the_first_unit(h264_ts: Path) -> None:
    """As FLV's sequence headers are: ffmpeg's first audio PES starts after the first
    keyframe, and the packager's init segment is made of what it knows at that keyframe."""
    items, _ = _demux(h264_ts.read_bytes())
    first_unit = next(n for n, item in enumerate(items) if isinstance(item, AccessUnit))
    assert {type(item) for item in items[:first_unit]} == {VideoConfig, AudioConfig}
    assert _units(items, TrackKind.AUDIO)[0].dts > _units(items, TrackKind.VIDEO)[0].dts


def test_timestamps_across_the_33_bit_wrap_continue_on_one_timeline(wrap_ts: Path) -> None:
    items, demuxer = _demux(wrap_ts.read_bytes())
    _assert_matches_ffprobe(wrap_ts, items)
    video = _units(items, TrackKind.VIDEO)
    assert video[0].dts < TIMESTAMP_MODULUS < video[-1].dts
    assert all(a.dts < b.dts for a, b in zip(video, video[1:], strict=False))
    assert demuxer.drops == {}


def _ts_clock() -> TimestampUnwrapper:
    return TimestampUnwrapper(
        TIMESTAMP_MODULUS, max_jump=MAX_TIMESTAMP_JUMP_TICKS, restart_gap=RESTART_GAP_TICKS
    )


def test_the_unwrapper_places_each_value_nearest_the_previous_one() -> None:
    unwrapper = _ts_clock()
    near_end = TIMESTAMP_MODULUS - 3000
    assert unwrapper.unwrap(near_end) == near_end
    assert unwrapper.unwrap(500) == TIMESTAMP_MODULUS + 500
    assert unwrapper.unwrap(TIMESTAMP_MODULUS - 100) == TIMESTAMP_MODULUS - 100  # B-frame pts
    assert unwrapper.unwrap(4000) == TIMESTAMP_MODULUS + 4000


def test_a_clock_jump_continues_the_timeline_half_a_second_later() -> None:
    unwrapper = _ts_clock()
    assert [unwrapper.unwrap(v) for v in (90_000, 93_000, 50_000_000, 50_003_000, 100)] == [
        90_000,
        93_000,
        93_000 + RESTART_GAP_TICKS,
        96_000 + RESTART_GAP_TICKS,
        96_000 + 2 * RESTART_GAP_TICKS,
    ]
    assert unwrapper.jumps == 2


def test_an_encoder_restarting_its_clock_mid_stream_continues_the_timeline(
    h264_ts: Path, media: Path
) -> None:
    """Two files back to back, the second 1000 s later and with restarted continuity
    counters: the frame cut short by the splice is dropped, everything else comes out."""
    later = make_ts_source(media / "later.ts", seconds=3, size="320x240", ts_offset=1000)
    first, _ = _demux(h264_ts.read_bytes())
    second, _ = _demux(later.read_bytes())
    spliced, demuxer = _demux(h264_ts.read_bytes() + later.read_bytes())
    video = _units(spliced, TrackKind.VIDEO)
    assert all(a.dts < b.dts for a, b in zip(video, video[1:], strict=False))
    expected = len(_units(first, TrackKind.VIDEO)) + len(_units(second, TrackKind.VIDEO))
    assert len(video) == expected - demuxer.dropped_units
    assert demuxer.dropped_units <= 1
    gap = next(
        b.dts - a.dts for a, b in zip(video, video[1:], strict=False) if b.dts - a.dts > 3000
    )
    assert gap <= RESTART_GAP_TICKS + 3000


def test_arbitrary_chunking_gives_the_same_output(h264_ts: Path) -> None:
    data = h264_ts.read_bytes()
    whole, _ = _demux(data)
    rng = random.Random(3)
    for _ in range(3):
        sizes = [rng.choice([1, 7, 188, 1316, 4000]) for _ in range(len(data) // 500)]
        chunked, _ = _demux(data, sizes)
        assert chunked == whole


def _packets(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]


def _pid(packet: bytes) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


def _video_pid(packets: list[bytes]) -> int:
    return max({_pid(p) for p in packets}, key=lambda pid: sum(_pid(p) == pid for p in packets))


def _audio_pid(packets: list[bytes]) -> int:
    video_pid = _video_pid(packets)
    return next(
        _pid(p) for p in packets if _pid(p) not in (0, 4096, video_pid, 0x1FFF) and _pid(p) > 32
    )


def _assert_losses_accounted(
    reference: list[Item], damaged: list[Item], demuxer: TsDemuxer, *, video_only: bool
) -> None:
    """Every unit out is one of the reference units, intact; each missing one is counted;
    after a dropped video frame, video resumes at a keyframe."""
    ref_video, got_video = _units(reference, TrackKind.VIDEO), _units(damaged, TrackKind.VIDEO)
    assert set(got_video) <= set(ref_video)
    assert set(_units(damaged, TrackKind.AUDIO)) <= set(_units(reference, TrackKind.AUDIO))
    assert got_video[-1] == ref_video[-1]  # after the loss, everything is back
    missing = len(ref_video) - len(got_video)
    assert missing > 0
    if video_only:
        assert demuxer.dropped_units == missing
    else:
        assert demuxer.dropped_units >= missing
    first_gap = next(
        i for i, (a, b) in enumerate(zip(got_video, ref_video, strict=False)) if a != b
    )
    assert got_video[first_gap].keyframe


def test_deleted_video_packets_drop_counted_units_until_the_next_keyframe(h264_ts: Path) -> None:
    data = h264_ts.read_bytes()
    reference, _ = _demux(data)
    packets = _packets(data)
    video_pid = _video_pid(packets)
    # Two packets from inside one frame: a lost PES start would merge two frames into one
    # broken PES, and a frame nobody saw begin cannot be counted.
    inside = [i for i, p in enumerate(packets) if _pid(p) == video_pid and not p[1] & 0x40]
    first = next(i for i in inside[len(inside) // 3 :] if i + 1 in inside)
    lost = {first, first + 1}
    damaged_data = b"".join(p for i, p in enumerate(packets) if i not in lost)
    damaged, demuxer = _demux(damaged_data)
    assert demuxer.drops[DropReason.CONTINUITY.value] == 1
    assert demuxer.drops[DropReason.AWAITING_KEYFRAME.value] > 0
    _assert_losses_accounted(reference, damaged, demuxer, video_only=True)


def test_a_transport_error_breaks_only_that_unit_and_what_references_it(h264_ts: Path) -> None:
    data = h264_ts.read_bytes()
    reference, _ = _demux(data)
    packets = _packets(data)
    video_pid = _video_pid(packets)
    index = [i for i, p in enumerate(packets) if _pid(p) == video_pid][100]
    flagged = bytearray(packets[index])
    flagged[1] |= 0x80
    packets[index] = bytes(flagged)
    damaged, demuxer = _demux(b"".join(packets))
    assert demuxer.drops[DropReason.TRANSPORT_ERROR.value] == 1
    _assert_losses_accounted(reference, damaged, demuxer, video_only=True)


def test_garbage_between_packets_loses_sync_and_resyncs(h264_ts: Path) -> None:
    data = h264_ts.read_bytes()
    reference, _ = _demux(data)
    cut = PACKET_SIZE * 400
    garbage = bytes([0x47, 1, 2, 3]) * 97  # sync bytes in the wrong places too
    damaged, demuxer = _demux(data[:cut] + garbage + data[cut:], [cut + 50, 300])
    assert demuxer.drops[DropReason.LOST_SYNC.value] >= 1
    _assert_losses_accounted(reference, damaged, demuxer, video_only=False)


def test_a_pes_shorter_than_declared_is_dropped(h264_ts: Path) -> None:
    """Audio PES declare their length; one missing its last packet (continuity counters
    renumbered, so only the length tells) is dropped and counted, the rest is intact."""
    data = h264_ts.read_bytes()
    reference, _ = _demux(data)
    packets = _packets(data)
    audio_pid = _audio_pid(packets)
    audio = [i for i, p in enumerate(packets) if _pid(p) == audio_pid]
    starts = [i for i in audio if packets[i][1] & 0x40]
    victim = audio[audio.index(starts[10]) - 1]  # the last packet of the 10th PES
    for i in audio[audio.index(victim) + 1 :]:
        header = bytearray(packets[i])
        header[3] = (header[3] & 0xF0) | ((header[3] - 1) & 0x0F)
        packets[i] = bytes(header)
    del packets[victim]
    damaged, demuxer = _demux(b"".join(packets))
    assert demuxer.drops == {DropReason.TRUNCATED_PES.value: 1}
    assert _units(damaged, TrackKind.VIDEO) == _units(reference, TrackKind.VIDEO)
    missing = set(_units(reference, TrackKind.AUDIO)) - set(_units(damaged, TrackKind.AUDIO))
    assert 1 <= len(missing) <= 10  # the frames of that one PES


def test_a_pes_cut_short_by_the_end_of_the_stream_is_told_apart_from_loss(h264_ts: Path) -> None:
    """An SRT caller closing discards what it had not sent: the stream may stop in the
    middle of an audio PES. That frame is dropped, counted as the end, not as loss."""
    packets = _packets(h264_ts.read_bytes())
    audio_pid = _audio_pid(packets)
    last_start = max(i for i, p in enumerate(packets) if _pid(p) == audio_pid and p[1] & 0x40)
    _, demuxer = _demux(b"".join(packets[: last_start + 1]))
    assert demuxer.drops == {DropReason.ENDED_MID_PES.value: 1}


def test_a_video_pes_the_stream_ends_in_is_kept_only_when_it_is_known_to_be_whole(
    h264_ts: Path,
) -> None:
    """Video PES have no length: at the end, the last one is whole if its last packet was
    padded (where a muxer ends a PES) or another track's packets followed it."""
    packets = _packets(h264_ts.read_bytes())
    reference, _ = _demux(b"".join(packets))
    video_pid = _video_pid(packets)
    video = [i for i, p in enumerate(packets) if _pid(p) == video_pid]
    last_start = max(i for i in video if packets[i][1] & 0x40)
    assert _pid(packets[-1]) != video_pid  # the whole file: its last frame is kept
    reference_video = _units(reference, TrackKind.VIDEO)

    cut = video[video.index(last_start) + 2]  # inside the last video PES: not padded
    truncated, demuxer = _demux(b"".join(packets[: cut + 1]))
    assert demuxer.drops == {DropReason.ENDED_MID_PES.value: 1}
    assert _units(truncated, TrackKind.VIDEO) == reference_video[:-1]

    # Right after its padded last packet: nothing of another track follows, yet it is whole
    # (only an audio PES begun before it may be cut short).
    ended, demuxer = _demux(b"".join(packets[: video[-1] + 1]))
    assert _units(ended, TrackKind.VIDEO) == reference_video
    assert demuxer.dropped_units <= demuxer.drops[DropReason.ENDED_MID_PES.value] <= 1


def test_mp2_audio_is_ignored_and_reported(mp2_ts: Path) -> None:
    items, demuxer = _demux(mp2_ts.read_bytes())
    [ignored] = demuxer.ignored_streams
    assert ignored.stream_type in (0x03, 0x04)
    assert "MP2" in ignored.description
    assert _units(items, TrackKind.AUDIO) == []
    assert len(_units(items, TrackKind.VIDEO)) == 60
    assert demuxer.drops == {}


def test_psi_sections_are_checked_with_the_mpeg_crc(h264_ts: Path) -> None:
    data = h264_ts.read_bytes()
    packets = _packets(data)
    pat_packet = next(p for p in packets if _pid(p) == 0)
    start = 5 + pat_packet[4]  # after the pointer field
    length = 3 + ((pat_packet[start + 1] & 0x0F) << 8 | pat_packet[start + 2])
    section = pat_packet[start : start + length]
    assert mpeg_crc32(section) == 0
    # Every PAT with one bit flipped in its CRC: no program is ever found, nothing comes out.
    crc_byte = start + length - 1
    broken = [
        p[:crc_byte] + bytes([p[crc_byte] ^ 1]) + p[crc_byte + 1 :] if _pid(p) == 0 else p
        for p in packets
    ]
    items, demuxer = _demux(b"".join(broken))
    assert items == []
    assert demuxer.dropped_units == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    demuxer = TsDemuxer()
    for chunk in chunks:
        demuxer.feed(chunk)
        demuxer.feed(b"\x47" + chunk)
    demuxer.flush()


@pytest.fixture(scope="module")
def h264_bytes(h264_ts: Path) -> bytes:
    return h264_ts.read_bytes()[: PACKET_SIZE * 600]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, PACKET_SIZE * 600 - 1), st.integers(0, 255)), max_size=40))
def test_corrupted_real_streams_never_raise_and_video_time_only_advances(
    h264_bytes: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(h264_bytes)
    for position, value in flips:
        data[position] = value
    items, _ = _demux(bytes(data), [1316] * 80)
    video = _units(items, TrackKind.VIDEO)
    assert all(a.dts < b.dts for a, b in zip(video, video[1:], strict=False))
