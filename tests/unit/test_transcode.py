"""Real source segments (ffmpeg → FLV → our packager) transcoded into rungs with PyAV."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import pytest

from media.codecs.h264 import is_idr, parse_avcc
from media.hls.segment_packager import PackagedSegment
from media.ladder import Rung, rungs_for_source
from packager.transcoding.transcode import (
    EncoderOptions,
    RungSegment,
    TranscodeError,
    transcode_segment,
)
from tests.media import make_source, package_flv, probe

OPTIONS = EncoderOptions()
TWO_RUNGS = [Rung("360p", 360, 800_000), Rung("240p", 240, 400_000)]


@pytest.fixture(scope="module")
def source_segments(tmp_path_factory) -> list[PackagedSegment]:
    """5 s of 480p30 with B-frames and AAC: source segments of 2, 2 and 1 s."""
    path = make_source(tmp_path_factory.mktemp("transcode") / "480p.flv", seconds=5, size="854x480")
    segments = package_flv(path)
    assert len(segments) == 3
    return segments


@pytest.fixture(scope="module")
def ladder(source_segments: list[PackagedSegment]) -> dict[int, list[RungSegment]]:
    video = source_segments[0].init.video
    rungs = rungs_for_source(TWO_RUNGS, video.width, video.height)
    return {
        s.sequence: transcode_segment(
            s.init.data, s.data, rungs, sequence=s.sequence, init_index=0, options=OPTIONS
        )
        for s in source_segments
    }


def _packets(init: bytes, segment: bytes, kind: str) -> list[av.Packet]:
    with av.open(io.BytesIO(init + segment), format="mp4") as container:
        stream = getattr(container.streams, kind)[0]
        return [p for p in container.demux(stream) if p.size]


def test_a_480p_source_gets_its_rungs_with_exact_codecs_and_sizes(
    ladder: dict[int, list[RungSegment]], tmp_path: Path
) -> None:
    outputs = ladder[0]
    assert [(o.rung.name, o.rung.width, o.rung.height) for o in outputs] == [
        ("360p", 640, 360),
        ("240p", 428, 240),
    ]
    for output in outputs:
        path = tmp_path / f"{output.rung.name}.mp4"
        path.write_bytes(output.init.data + output.data)
        video, audio = sorted(probe(str(path))["streams"], key=lambda s: s["codec_type"] != "video")
        assert (video["width"], video["height"]) == (output.rung.width, output.rung.height)
        assert output.init.codecs == f"avc1.6400{video['level']:02x},mp4a.40.2"
        assert video["profile"] == "High"
        assert audio["codec_name"] == "aac"
        assert output.frame_rate == 30.0


def test_x264_makes_exactly_the_codecs_the_ladder_advertised_before_encoding(
    ladder: dict[int, list[RungSegment]],
) -> None:
    """The avcC x264 writes says the profile and level the rung computed up front."""
    for outputs in ladder.values():
        for output in outputs:
            avcc = parse_avcc(output.init.video.record)
            assert (avcc.profile_idc, avcc.constraint_flags) == (100, 0)
            assert avcc.level_idc == output.rung.h264_level
            assert output.init.codecs == f"{output.rung.video_codec},mp4a.40.2"
    assert [o.rung.video_codec for o in ladder[0]] == ["avc1.64001f", "avc1.64001e"]


def test_a_rung_init_is_the_same_for_every_segment_so_it_is_written_once(
    source_segments: list[PackagedSegment], ladder: dict[int, list[RungSegment]]
) -> None:
    """Segments of 60 and 30 frames (different GOP lengths) share one init, byte for byte."""
    assert [s.video_frames for s in source_segments] == [60, 60, 30]
    for index in range(2):
        inits = {ladder[sequence][index].init.data for sequence in ladder}
        assert len(inits) == 1


def test_every_rung_keeps_the_source_decode_and_presentation_times_and_audio_bytes(
    source_segments: list[PackagedSegment], ladder: dict[int, list[RungSegment]]
) -> None:
    for source in source_segments:
        video = _packets(source.init.data, source.data, "video")
        audio = _packets(source.init.data, source.data, "audio")
        assert video[0].dts == source.start_ticks
        for output in ladder[source.sequence]:
            rung_video = _packets(output.init.data, output.data, "video")
            rung_audio = _packets(output.init.data, output.data, "audio")
            assert [p.dts for p in rung_video] == sorted(p.dts for p in video)
            assert [p.pts for p in rung_video] == sorted(p.pts for p in video)
            assert sum(p.duration for p in rung_video) == source.duration_ticks
            assert [(p.dts, p.duration, bytes(p)) for p in rung_audio] == [
                (p.dts, p.duration, bytes(p)) for p in audio
            ]


def test_each_rung_segment_is_one_closed_gop_opening_on_an_idr(
    ladder: dict[int, list[RungSegment]],
) -> None:
    for outputs in ladder.values():
        for output in outputs:
            video = _packets(output.init.data, output.data, "video")
            assert [p.is_keyframe for p in video] == [True] + [False] * (len(video) - 1)
            assert is_idr(bytes(video[0]))


def test_consecutive_rung_segments_decode_as_one_stream_without_errors(
    ladder: dict[int, list[RungSegment]], tmp_path: Path
) -> None:
    for index, name in enumerate(("360p", "240p")):
        outputs = [ladder[sequence][index] for sequence in sorted(ladder)]
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(outputs[0].init.data + b"".join(o.data for o in outputs))
        result = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stderr == ""


def test_rungs_are_deterministic_so_a_rerun_overwrites_identical_objects(
    source_segments: list[PackagedSegment], ladder: dict[int, list[RungSegment]]
) -> None:
    source = source_segments[1]
    again = transcode_segment(
        source.init.data,
        source.data,
        [o.rung for o in ladder[1]],
        sequence=1,
        init_index=0,
        options=OPTIONS,
    )
    assert [(o.init.data, o.data) for o in again] == [(o.init.data, o.data) for o in ladder[1]]


def test_a_corrupt_source_segment_raises_transcode_error(
    source_segments: list[PackagedSegment],
) -> None:
    source = source_segments[0]
    garbage = source.data[:200] + bytes(len(source.data) - 200)
    with pytest.raises(TranscodeError):
        transcode_segment(
            source.init.data,
            garbage,
            [Rung("360p", 360, 800_000, 640)],
            sequence=0,
            init_index=0,
            options=OPTIONS,
        )
