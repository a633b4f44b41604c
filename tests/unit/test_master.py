"""The master a session's rows give: complete, in the planned order, every attribute there."""

from __future__ import annotations

import m3u8

from core.models import Rendition
from packager.catalog import render_master
from packager.ladder_rows import place_variants


def _source(media_seconds: float = 2.0, **values) -> Rendition:
    return Rendition(
        name="source",
        codecs="avc1.640028,mp4a.40.2",
        width=1920,
        height=1080,
        frame_rate=29.97,
        bandwidth=6_300_000,
        average_bandwidth=6_000_000,
        media_seconds=media_seconds,
        **values,
    )


def _rung(name: str, height: int, width: int, bandwidth: int, **values) -> Rendition:
    """A rung as planned: codecs, size, frame rate and seeds, no media yet."""
    return Rendition(
        name=name,
        codecs="avc1.64001f,mp4a.40.2",
        width=width,
        height=height,
        frame_rate=29.97,
        bandwidth=bandwidth,
        average_bandwidth=bandwidth * 10 // 11,
        media_seconds=0.0,
        **values,
    )


def _ladder() -> list[Rendition]:
    return [
        _source(),
        _rung("720p", 720, 1280, 3_600_000),
        _rung("480p", 480, 854, 1_750_000),
        _rung("360p", 360, 640, 1_060_000),
    ]


def test_the_variant_nearest_2_mbit_goes_first_then_the_rest_by_quality() -> None:
    renditions = _ladder()
    place_variants(renditions, 2_000_000)
    assert [r.position for r in renditions] == [1, 2, 0, 3]  # 480p, source, 720p, 360p


def test_places_once_given_stay_and_a_later_rung_goes_last() -> None:
    renditions = _ladder()
    place_variants(renditions, 2_000_000)
    renditions[2].bandwidth = 9_000_000  # measured later: the order does not move
    later = _rung("240p", 240, 426, 600_000)
    place_variants([*renditions, later], 2_000_000)
    assert [r.position for r in renditions] == [1, 2, 0, 3]
    assert later.position == 4


def test_the_master_lists_every_planned_rung_before_any_rung_has_media() -> None:
    renditions = _ladder()
    place_variants(renditions, 2_000_000)
    master = m3u8.loads(render_master(renditions))
    assert [p.uri for p in master.playlists] == [
        "480p/index.m3u8",
        "source/index.m3u8",
        "720p/index.m3u8",
        "360p/index.m3u8",
    ]
    planned = sorted(renditions, key=lambda r: r.position)
    for playlist, rendition in zip(master.playlists, planned, strict=True):
        info = playlist.stream_info
        assert (info.bandwidth, info.average_bandwidth) == (
            rendition.bandwidth,
            rendition.average_bandwidth,
        )
        assert info.codecs == rendition.codecs
        assert info.frame_rate == 29.97
        assert info.closed_captions == "NONE"


def test_no_master_until_the_source_has_its_first_segment() -> None:
    renditions = [_source(media_seconds=0.0), _rung("360p", 360, 640, 1_060_000)]
    assert render_master(renditions) is None
    assert render_master([]) is None


def test_a_rung_without_a_frame_rate_of_its_own_says_the_source_s() -> None:
    rung = _rung("360p", 360, 640, 1_060_000)
    rung.frame_rate = None
    master = m3u8.loads(render_master([_source(), rung]))
    assert [p.stream_info.frame_rate for p in master.playlists] == [29.97, 29.97]


def test_an_audio_only_source_has_no_frame_rate_or_resolution() -> None:
    audio = Rendition(
        name="source", codecs="mp4a.40.2", bandwidth=130_000, average_bandwidth=128_000
    )
    audio.media_seconds = 2.0
    [variant] = m3u8.loads(render_master([audio])).playlists
    assert variant.stream_info.frame_rate is None
    assert variant.stream_info.resolution is None
