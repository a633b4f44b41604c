"""The live packager turns a real encoder's FLV into CMAF segments that ffmpeg decodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from media.codecs.aac import parse_asc, split_adts
from media.demux.flv import FlvTagType, iter_flv_tags
from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.mp4.fmp4 import AUDIO_TRACK_ID
from media.types import CLOCK_HZ, AccessUnit, TrackKind
from tests.media import (
    audio_ahead_of_the_first_keyframe,
    explicit_he_aac_asc,
    make_media_file,
    make_source,
    make_ts_source,
    package_flv,
    package_ts,
)
from tests.unit.test_fmp4 import find, traf_summary, walk


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    return make_source(
        tmp_path_factory.mktemp("live") / "small.flv", seconds=7, size="320x240", gop=30
    )


@pytest.fixture(scope="module")
def silent_source(tmp_path_factory) -> Path:
    return make_source(
        tmp_path_factory.mktemp("live") / "silent.flv",
        seconds=5,
        size="320x240",
        gop=30,
        audio=False,
    )


def decodes_cleanly(tmp_path: Path, segments: list[PackagedSegment]) -> str:
    playlist = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:3"]
    current_init = None
    for segment in segments:
        if segment.discontinuity:
            playlist.append("#EXT-X-DISCONTINUITY")
        if segment.init.index != current_init:
            current_init = segment.init.index
            (tmp_path / f"init_{current_init}.mp4").write_bytes(segment.init.data)
            playlist.append(f'#EXT-X-MAP:URI="init_{current_init}.mp4"')
        (tmp_path / f"{segment.sequence}.m4s").write_bytes(segment.data)
        playlist += [f"#EXTINF:{segment.duration:.3f},", f"{segment.sequence}.m4s"]
    playlist.append("#EXT-X-ENDLIST")
    (tmp_path / "index.m3u8").write_text("\n".join(playlist) + "\n")
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(tmp_path / "index.m3u8"), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stderr.strip()


def test_a_real_encoder_stream_is_cut_every_two_seconds_on_keyframes(
    small_source: Path, tmp_path: Path
) -> None:
    segments = package_flv(small_source, SegmentPackager(2.0))
    assert [s.sequence for s in segments] == [0, 1, 2, 3]
    assert [round(s.duration, 3) for s in segments[:-1]] == [2.0, 2.0, 2.0]
    # The last segment lasts until its last frame of either track ends: here the encoder's
    # AAC runs a few frames past the last video frame.
    assert 1.0 <= segments[-1].duration <= 1.0 + 5 * 1024 / 48000
    assert segments[0].start_ticks == 0
    video_codec, audio_codec = segments[0].init.codecs.split(",")
    assert video_codec.startswith("avc1.6400")  # High profile; x264 picks the level
    assert audio_codec == "mp4a.40.2"
    assert all(b.start_ticks == a.end_ticks for a, b in zip(segments, segments[1:], strict=False))
    assert not any(s.discontinuity for s in segments)
    assert all(s.independent for s in segments)  # x264 opens every GOP with an IDR
    assert decodes_cleanly(tmp_path, segments) == ""


def test_a_reconnected_publisher_continues_the_timeline_and_sequence_after_a_discontinuity(
    small_source: Path, tmp_path: Path
) -> None:
    first = package_flv(small_source, SegmentPackager(2.0))
    resumed = SegmentPackager(
        2.0,
        first_sequence=first[-1].sequence + 1,
        timeline_start=first[-1].end_ticks,
        init_index=first[-1].init.index + 1,
        discontinuity=True,
    )
    second = package_flv(small_source, resumed)
    assert second[0].sequence == 4
    assert second[0].start_ticks == first[-1].end_ticks
    assert second[0].start_ticks == sum(s.duration_ticks for s in first)
    assert second[0].discontinuity and not any(s.discontinuity for s in second[1:])
    assert second[0].init.index == 1
    assert decodes_cleanly(tmp_path, first + second) == ""


def test_a_source_without_audio_is_packaged_video_only(silent_source: Path, tmp_path: Path) -> None:
    segments = package_flv(silent_source, SegmentPackager(2.0))
    assert segments[0].init.audio is None
    assert segments[0].init.codecs.startswith("avc1.6400")
    assert "," not in segments[0].init.codecs
    # The timeline runs to the end of the last frame shown; with B-frames the last frames
    # are shown up to two frame intervals after they are decoded.
    total = sum(s.duration_ticks for s in segments)
    assert 5 * CLOCK_HZ <= total <= 5 * CLOCK_HZ + 2 * 3000 + 90
    assert decodes_cleanly(tmp_path, segments) == ""


def test_explicit_he_aac_segments_follow_each_other_without_a_hole(tmp_path: Path) -> None:
    # Real AAC frames at the 24 kHz core rate, declared as HE-AAC with SBR output at 48 kHz:
    # each frame then lasts 2048 samples at the track's 48 kHz timescale.
    core = make_media_file(
        tmp_path / "core.aac", "-c:a", "aac", "-ar", "24000", "-ac", "2", seconds=7, video=False
    )
    frames = [raw for _, raw in split_adts(core.read_bytes())]
    config = parse_asc(explicit_he_aac_asc())
    packager = SegmentPackager(2.0)
    packager.configure(config)
    segments: list[PackagedSegment] = []
    for index, frame in enumerate(frames):
        dts = index * 2048 * CLOCK_HZ // config.sample_rate
        segments += packager.push(AccessUnit(TrackKind.AUDIO, dts, dts, True, frame))
    segments += packager.flush()
    assert len(segments) >= 3
    assert segments[0].init.codecs == "mp4a.40.5"

    starts, ends = [], []
    for segment in segments:
        [traf] = find(walk(segment.data), "moof").find_all("traf")
        track, base, trun = traf_summary(traf)
        assert track == AUDIO_TRACK_ID
        assert set(trun.durations) == {2048}
        starts.append(base)
        ends.append(base + sum(trun.durations))
    assert starts[1:] == ends[:-1]  # the audit found 1024 samples (21 ms) missing at each
    assert ends[-1] == 2048 * len(frames)
    assert sum(s.duration_ticks for s in segments) == ends[-1] * CLOCK_HZ // config.sample_rate
    assert decodes_cleanly(tmp_path, segments) == ""


def test_audio_stamped_before_the_first_keyframe_is_dropped_not_fatal(
    small_source: Path, tmp_path: Path
) -> None:
    # The audit's case: audio arrives after the opening keyframe, stamped before it.
    tags = audio_ahead_of_the_first_keyframe(iter_flv_tags(small_source.read_bytes()), 100)
    keyframe_ms = next(t.timestamp_ms for t in tags if t.tag_type is FlvTagType.VIDEO)
    early = [t for t in tags if t.tag_type is FlvTagType.AUDIO and t.timestamp_ms < keyframe_ms]
    packager = SegmentPackager(2.0)
    segments = package_flv(tags, packager)
    assert [s.sequence for s in segments] == [0, 1, 2, 3]
    assert segments[0].start_ticks == 0
    assert packager.segmenter.dropped_before_keyframe == len(early) - 1  # less the config
    moof = find(walk(segments[0].data), "moof")
    audio = [traf_summary(t) for t in moof.find_all("traf") if traf_summary(t)[0] == AUDIO_TRACK_ID]
    [(_, first_audio_time, _)] = audio
    assert first_audio_time >= 0
    assert decodes_cleanly(tmp_path, segments) == ""


def test_open_gop_hevc_segments_after_the_first_are_not_independent(tmp_path: Path) -> None:
    # x265's default: an IDR first, then every GOP opens on a CRA whose RASL pictures
    # reference the GOP before it.
    source = make_ts_source(tmp_path / "hevc.ts", seconds=6, size="320x240", video_codec="libx265")
    segments = package_ts(source)
    assert segments[0].init.codecs.startswith("hvc1.")
    assert [s.independent for s in segments] == [True] + [False] * (len(segments) - 1)
    assert len(segments) >= 3


def test_a_segment_counts_its_frames_so_its_frame_rate_is_known_without_sps_timing(
    small_source: Path,
) -> None:
    segments = package_flv(small_source, SegmentPackager(2.0))
    assert [s.video_frames for s in segments[:-1]] == [60, 60, 60]
    assert [s.frame_rate for s in segments[:-1]] == [30.0, 30.0, 30.0]


def test_the_target_duration_is_fixed_by_the_first_segment_and_bounds_the_later_ones(
    tmp_path_factory, tmp_path: Path
) -> None:
    # Keyframes every 1.5 s: cutting at the first keyframe past 2 s would make 3 s segments,
    # more than a target duration of 2 allows; the keyframe inside each one is cut at.
    source = make_source(
        tmp_path_factory.mktemp("live") / "gop45.flv", seconds=6, size="320x240", gop=45
    )
    packager = SegmentPackager(2.0)
    segments = package_flv(source, packager)
    assert packager.target_duration == 2
    # the last one runs to the end of the audio, as every last segment does
    assert [round(s.duration, 3) for s in segments[:-1]] == [1.5, 1.5, 1.5]
    assert all(s.duration <= 2.499 for s in segments)
    assert decodes_cleanly(tmp_path, segments) == ""

    # A 2.5 s GOP leaves no keyframe inside: the first segment fixes a target duration of 3.
    long_gop = make_source(
        tmp_path_factory.mktemp("live") / "gop75.flv", seconds=5, size="320x240", gop=75
    )
    packager = SegmentPackager(2.0)
    segments = package_flv(long_gop, packager)
    assert packager.target_duration == 3
    assert round(segments[0].duration, 3) == 2.5


def test_a_session_joining_a_presentation_keeps_its_target_duration(small_source: Path) -> None:
    packager = SegmentPackager(2.0, target_duration=4)
    package_flv(small_source, packager)
    assert packager.target_duration == 4
