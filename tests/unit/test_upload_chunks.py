"""A transcoded upload split into chunks, without services: the plan is a whole number of
segments per chunk on the video's clock; audio is snapped onto one 1024-sample grid and
handed out with a margin; and chunks packaged one by one, each from its own open file as
the tasks do (Matroska, which has an index to seek by, and MPEG-TS, which has none), give
the single pass's segment grid and init, decode with ffmpeg, and carry audio with no gap or
overlap at the seams. A video extent far past the declared duration, or past the absolute
limit, is refused before anything is planned."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from pathlib import Path

import av
import pytest

from media.hls.segment_packager import PackagedSegment, SegmentPackager
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind
from packager.tasks.upload_chunks import (
    AUDIO_MARGIN_TICKS,
    ChunkPlan,
    chunk_audio,
    chunk_segments,
    decode_audio_units,
    encode_audio_units,
    extent_refusal,
    pack_audio_unit,
    plan_chunks,
    read_audio_units,
    snap_audio,
)
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_source import AAC_FRAME_SAMPLES, SourceOptions, UploadSource
from tests.media import make_media_file

SEGMENT_SECONDS = 1.0
CHUNK_SECONDS = 2.0
SECONDS = 5
OPTIONS = SourceOptions(SEGMENT_SECONDS, EncoderOptions())
# VP9 with a keyframe every 1.5 s (chunks seek back and drop frames), AAC in Matroska:
# copied, with millisecond timestamps that are not on the sample grid.
VP9_AAC = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "45"]
VP9_AAC += ["-c:a", "aac"]
# MPEG-2 video and MP2 audio in MPEG-TS: no index, timestamps from 1.4 s; the demuxer seeks
# by guessing byte offsets.
MPEG2_TS = ["-c:v", "mpeg2video", "-g", "45", "-c:a", "mp2", "-f", "mpegts"]


def test_a_plan_is_whole_segments_per_chunk_and_the_last_chunk_runs_to_the_end() -> None:
    plan = plan_chunks(1000, 1000 + 9 * CLOCK_HZ, 2.0, 20.0)
    assert (plan.segments, plan.chunk_ticks, plan.count) == (10, 20 * CLOCK_HZ, 1)
    plan = plan_chunks(1000, 1000 + 9 * CLOCK_HZ, 2.0, 4.0)
    assert (plan.segments, plan.count) == (2, 3)
    assert [(plan.start(i), plan.end(i)) for i in range(3)] == [
        (1000, 1000 + 4 * CLOCK_HZ),
        (1000 + 4 * CLOCK_HZ, 1000 + 8 * CLOCK_HZ),
        (1000 + 8 * CLOCK_HZ, None),
    ]
    assert [plan.first_sequence(i) for i in range(3)] == [0, 2, 4]
    # A last frame exactly on a chunk boundary starts a chunk of its own.
    assert plan_chunks(0, 4 * CLOCK_HZ, 2.0, 4.0).count == 2
    # Shorter than a segment: still one segment a chunk.
    assert plan_chunks(0, CLOCK_HZ, 2.0, 0.5).segments == 1


def test_an_extent_far_past_the_declared_duration_or_past_the_limit_is_refused() -> None:
    day = 24 * 3600.0
    # Within twice the declared duration and a minute: a header's duration is not exact.
    assert extent_refusal(66.0, 3.0, day) is None
    assert extent_refusal(7200.0, 3600.0, day) is None
    assert extent_refusal(60.0, None, day) is None  # nothing declared: only the limit
    far = extent_refusal(3603.0, 3.0, day)
    assert far == (
        "the video's timestamps span 3603.0 s, far beyond the 3.0 s the file declares "
        "(at most 66.0 s): a packet carries a far-off timestamp"
    )
    long = extent_refusal(day + 1, None, day)
    assert long == (
        "the video's timestamps span 86401.0 s: longer than this server processes "
        "(86400 s, NEBULA_UPLOAD_MAX_SECONDS)"
    )
    # The limit holds even when the file declares that much.
    assert extent_refusal(day + 1, day + 1, day) == long
    # 24 h of the shortest segments still numbers far below the int32 sequence column.
    assert plan_chunks(0, round(day * CLOCK_HZ), 0.1, 0.1).count < 2**31


def _audio(times: list[int]) -> list[AccessUnit]:
    return [
        AccessUnit(TrackKind.AUDIO, t, t, True, bytes([n % 256]) * 3) for n, t in enumerate(times)
    ]


def test_audio_is_snapped_onto_one_frame_grid_keeping_holes() -> None:
    rate = 44100
    frame_ms = AAC_FRAME_SAMPLES * 1000 / rate
    # Millisecond timestamps, as Matroska keeps them, with a hole of two frames after 5.
    frames = [*range(5), *range(7, 12)]
    units = _audio([round(round(500 + n * frame_ms) * CLOCK_HZ / 1000) for n in frames])
    snapped = list(snap_audio(iter(units), rate, AAC_FRAME_SAMPLES))
    samples = [round(u.dts * rate / CLOCK_HZ) for u in snapped]
    assert [s - samples[0] for s in samples] == [n * AAC_FRAME_SAMPLES for n in frames]
    assert [u.data for u in snapped] == [u.data for u in units]
    assert list(snap_audio([], rate, AAC_FRAME_SAMPLES)) == []


def test_each_chunk_gets_its_audio_with_a_margin_and_it_survives_the_object_store() -> None:
    plan = ChunkPlan(origin=0, chunk_ticks=4 * CLOCK_HZ, segments=2, count=3)
    units = _audio(list(range(0, 10 * CLOCK_HZ, 1920)))
    indices, parts = zip(*chunk_audio(iter(units), plan), strict=True)
    assert indices == (0, 1, 2)
    assert parts[0][0] is units[0] and parts[2][-1] is units[-1]
    assert parts[0][-1].dts < 4 * CLOCK_HZ + AUDIO_MARGIN_TICKS <= units[len(parts[0])].dts
    assert parts[1][0].dts >= 4 * CLOCK_HZ - AUDIO_MARGIN_TICKS
    assert set(units) == {u for part in parts for u in part}  # nothing left out
    assert decode_audio_units(encode_audio_units(parts[1])) == parts[1]
    assert decode_audio_units(b"") == []
    # The same cut as slicing the whole list at the margins (what the planner once held).
    for index, part in enumerate(parts):
        low = 0 if index == 0 else plan.start(index) - AUDIO_MARGIN_TICKS
        high = plan.end(index) + AUDIO_MARGIN_TICKS if plan.end(index) else 1 << 62
        assert part == [u for u in units if low <= u.dts < high]


def test_every_chunk_gets_an_audio_object_even_where_the_audio_stopped_before_it() -> None:
    plan = ChunkPlan(origin=0, chunk_ticks=4 * CLOCK_HZ, segments=2, count=4)
    units = _audio(list(range(0, 3 * CLOCK_HZ, 1920)))
    assert [(i, len(part)) for i, part in chunk_audio(units, plan)] == [
        (0, len(units)),
        (1, len([u for u in units if u.dts >= 3 * CLOCK_HZ])),
        (2, 0),
        (3, 0),
    ]
    assert list(chunk_audio([], plan)) == [(i, []) for i in range(4)]


def test_a_spooled_unit_cut_short_is_refused_saying_where() -> None:
    data = encode_audio_units(_audio([0, 1920]))
    with pytest.raises(ValueError, match="an audio unit of 3 bytes cut short at 1"):
        list(read_audio_units(io.BytesIO(data[:-2])))
    with pytest.raises(ValueError, match="an audio unit header cut short: 5 bytes"):
        decode_audio_units(data[:5])


@pytest.fixture(scope="module", params=["vp9-aac.mkv", "mpeg2-mp2.ts"])
def upload_file(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chunks")
    codecs = VP9_AAC if request.param.endswith(".mkv") else MPEG2_TS
    return make_media_file(folder / request.param, *codecs, seconds=SECONDS, size="320x240")


def _single_pass(path: Path) -> list[PackagedSegment]:
    packager = SegmentPackager(SEGMENT_SECONDS)
    with av.open(str(path)) as container:
        source = UploadSource(container, OPTIONS)
        for config in source.configs:
            packager.configure(config)
        segments = [s for unit in source.access_units() for s in packager.push(unit)]
    return segments + packager.flush()


def _chunked(path: Path) -> tuple[ChunkPlan, list[PackagedSegment]]:
    """What the planner and its chunk tasks do, minus the storage."""
    with av.open(str(path)) as container:
        source = UploadSource(container, OPTIONS)
        spool = io.BytesIO()
        scan = source.scan(lambda unit: spool.write(pack_audio_unit(unit)))
        [audio_config] = [c for c in source.configs if isinstance(c, AudioConfig)]
    plan = plan_chunks(scan.video_start, scan.video_end, SEGMENT_SECONDS, CHUNK_SECONDS)
    spool.seek(0)
    audio = snap_audio(
        read_audio_units(spool), audio_config.sample_rate, audio_config.frame_samples
    )
    segments = []
    for index, part in chunk_audio(audio, plan):
        with av.open(str(path)) as container:
            source = UploadSource(container, OPTIONS)
            chunk = chunk_segments(source, part, plan, index, SEGMENT_SECONDS)
            segments += [segment for segment, _ in chunk]
    return plan, segments


def test_chunks_packaged_apart_join_into_the_single_pass_grid_and_decode_seamlessly(
    upload_file: Path, tmp_path: Path
) -> None:
    single = _single_pass(upload_file)
    plan, chunked = _chunked(upload_file)
    assert plan.count == 3

    def grid(segments: list[PackagedSegment]) -> list[tuple[int, int, int]]:
        return [(s.sequence, s.start_ticks, s.duration_ticks) for s in segments]

    assert grid(chunked)[:-1] == grid(single)[:-1]
    # The end of the last one is where the audio ends: on the sample grid here, within the
    # container's millisecond rounding of it in the single pass.
    assert grid(chunked)[-1][:2] == grid(single)[-1][:2]
    assert abs(chunked[-1].duration - single[-1].duration) <= 0.001
    assert [s.sequence for s in chunked] == list(range(SECONDS))
    assert all(a.end_ticks == b.start_ticks for a, b in itertools.pairwise(chunked))
    # x264 with the same settings: the same SPS/PPS, so one init serves every chunk.
    assert {s.init.data for s in chunked} == {single[0].init.data}

    path = tmp_path / "chunked.mp4"
    path.write_bytes(chunked[0].init.data + b"".join(s.data for s in chunked))
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stderr.strip() == ""
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts"]
        + ["-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    starts = [int(p["pts"]) for p in json.loads(packets.stdout)["packets"]]
    # Every AAC frame starts where the one before ends, across the seams at 2 s and 4 s.
    assert {b - a for a, b in itertools.pairwise(starts)} == {AAC_FRAME_SAMPLES}
    assert abs((starts[-1] - starts[0]) / 48000 - SECONDS) <= 3 * AAC_FRAME_SAMPLES / 48000
