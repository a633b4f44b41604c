"""Ladder maths: which rungs a source gets and how wide they are; the ladder JSON validator."""

from __future__ import annotations

import pytest

from media.codecs.h264 import high_profile_level
from media.ladder import DEFAULT_LADDER, Rung, parse_ladder, rungs_for_source


def _sizes(rungs: list[Rung]) -> list[tuple[str, int, int]]:
    return [(r.name, r.width, r.height) for r in rungs]


def test_a_1080p_source_gets_the_three_default_rungs_tallest_first_in_16_by_9() -> None:
    rungs = rungs_for_source(DEFAULT_LADDER, 1920, 1080)
    assert _sizes(rungs) == [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
    assert [r.video_bitrate for r in rungs] == [3_000_000, 1_400_000, 800_000]


def test_rungs_at_or_above_the_source_height_are_skipped() -> None:
    assert _sizes(rungs_for_source(DEFAULT_LADDER, 854, 480)) == [("360p", 640, 360)]
    assert _sizes(rungs_for_source(DEFAULT_LADDER, 1280, 720)) == [
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]
    assert rungs_for_source(DEFAULT_LADDER, 320, 240) == []


@pytest.mark.parametrize(
    ("source", "height", "width"),
    [
        ((1440, 1080), 720, 960),
        ((1080, 1920), 360, 202),
        ((854, 480), 240, 428),
        ((850, 480), 240, 426),
    ],
)
def test_widths_follow_the_source_aspect_ratio_and_are_even(
    source: tuple[int, int], height: int, width: int
) -> None:
    [rung] = rungs_for_source([Rung("r", height, 1_000_000)], *source)
    assert (rung.width, rung.height) == (width, height)
    assert rung.width % 2 == 0


def test_vbv_follows_the_reference_ladder_peak_and_buffer() -> None:
    rung = Rung("720p", 720, 3_000_000)
    assert (rung.max_bitrate, rung.buffer_size) == (3_300_000, 6_000_000)


def test_a_valid_ladder_parses_into_rungs_in_the_given_order() -> None:
    rungs = parse_ladder(
        [
            {"name": "540p", "height": 540, "bitrate": 2_000_000},
            {"name": "234p", "height": 234, "bitrate": 300_000},
        ]
    )
    assert rungs == [Rung("540p", 540, 2_000_000), Rung("234p", 234, 300_000)]


def test_an_empty_ladder_means_the_source_only() -> None:
    assert parse_ladder([]) == []


@pytest.mark.parametrize(
    ("ladder", "message"),
    [
        (
            [{"name": f"r{i}", "height": 360, "bitrate": 800_000} for i in range(9)],
            "ladder must be a list of at most 8 rungs",
        ),
        ({"name": "720p"}, "ladder must be a list"),
        (["720p"], "ladder[0] must be an object"),
        ([{"name": "720p", "height": 720}], "ladder[0] must have exactly the keys"),
        ([{"name": "720p", "height": 720, "bitrate": 1, "fps": 30}], "exactly the keys"),
        ([{"name": "source", "height": 720, "bitrate": 3_000_000}], "ladder[0].name"),
        ([{"name": "HD/1", "height": 720, "bitrate": 3_000_000}], "ladder[0].name"),
        (
            [{"name": "odd", "height": 721, "bitrate": 3_000_000}],
            "ladder[0].height must be an even integer 64..4320, got 721",
        ),
        ([{"name": "big", "height": 8640, "bitrate": 3_000_000}], "ladder[0].height"),
        ([{"name": "t", "height": True, "bitrate": 3_000_000}], "ladder[0].height"),
        ([{"name": "slow", "height": 360, "bitrate": 10}], "ladder[0].bitrate"),
        ([{"name": "f", "height": 360, "bitrate": 8e5}], "ladder[0].bitrate"),
        (
            [
                {"name": "a", "height": 360, "bitrate": 800_000},
                {"name": "a", "height": 240, "bitrate": 400_000},
            ],
            "ladder[1].name 'a' is used by an earlier rung",
        ),
    ],
)
def test_an_invalid_ladder_is_refused_naming_the_rung_and_field(ladder, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_ladder(ladder)
    assert message in str(error.value)


def test_each_rung_has_the_high_profile_codec_its_size_and_vbv_need_at_up_to_60_fps() -> None:
    rungs = rungs_for_source(DEFAULT_LADDER, 1920, 1080, 30.0)
    assert [(r.name, r.video_codec) for r in rungs] == [
        ("720p", "avc1.640020"),  # 3600 macroblocks at 60 fps: level 3.2
        ("480p", "avc1.64001f"),
        ("360p", "avc1.64001f"),
    ]
    # The same at 25 or 60 fps, so a reconnect at another rate keeps what was advertised.
    assert rungs_for_source(DEFAULT_LADDER, 1920, 1080, 60.0) == rungs
    assert rungs_for_source(DEFAULT_LADDER, 1920, 1080) == rungs


def test_a_source_faster_than_60_fps_raises_the_rung_levels() -> None:
    [rung, *_] = rungs_for_source(DEFAULT_LADDER, 1920, 1080, 120.0)
    assert rung.video_codec == "avc1.64002a"  # 720p120: level 4.2


def test_a_rung_not_fitted_to_a_source_has_no_level() -> None:
    with pytest.raises(ValueError, match="no width"):
        _ = Rung("720p", 720, 3_000_000).video_codec


@pytest.mark.parametrize(
    ("size", "rate", "bit_rate", "level"),
    [
        ((1920, 1080), 30.0, 6_000_000, 40),  # 8160 macroblocks x 30 fits 4.0's 245760
        ((1920, 1080), 60.0, 6_000_000, 42),
        ((1920, 1080), 30.0, 30_000_000, 41),  # above 4.0's 25 Mbit/s (High: 1.25 x 20000)
        ((640, 360), 30.0, 880_000, 30),
        ((176, 144), 15.0, 64_000, 10),
    ],
)
def test_the_level_is_the_smallest_whose_table_a1_limits_fit(
    size: tuple[int, int], rate: float, bit_rate: int, level: int
) -> None:
    assert high_profile_level(*size, rate, bit_rate, bit_rate) == level
