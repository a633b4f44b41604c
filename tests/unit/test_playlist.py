"""Playlist rendering against golden files, cross-checked by parsing with the m3u8 library.

Set NEBULA_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change, then
review the diff: the files are the specification.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import m3u8
import pytest

from media.hls.playlist import (
    MediaPlaylist,
    PartEntry,
    PreloadHint,
    SegmentEntry,
    ServerControl,
    Variant,
    format_program_date_time,
    live_window,
    render_master_playlist,
    render_media_playlist,
)
from media.hls.target_duration import (
    max_segment_ticks,
    presentation_target_duration,
    rounded_extinf,
)
from media.types import CLOCK_HZ

GOLDEN = Path(__file__).parent / "golden"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NEBULA_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def session(count: int, duration: float = 2.0, discontinuities: tuple[int, ...] = ()) -> list:
    """`count` consecutive segments from sequence 0 with wall-clock times that follow them."""
    segments, clock = [], T0
    for n in range(count):
        segments.append(
            SegmentEntry(
                sequence=n,
                uri=f"seg_{n:05d}.m4s",
                duration=duration,
                program_date_time=clock,
                discontinuity=n in discontinuities,
            )
        )
        clock += timedelta(seconds=duration)
    return segments


def render_window(
    segments: list[SegmentEntry], size: int, target_duration: int, map_uri: str | None = None
) -> str:
    """The live playlist of the last `size` segments, as a live stream lists them."""
    window = live_window(segments, size)
    return render_media_playlist(
        MediaPlaylist(
            segments=window.segments,
            target_duration=target_duration,
            map_uri=map_uri,
            media_sequence=window.media_sequence,
            discontinuity_sequence=window.discontinuity_sequence,
        )
    )


def test_live_window_slides_and_counts_discontinuities_that_left_it() -> None:
    text = render_window(session(10, discontinuities=(3, 7)), 4, 2, map_uri="init.mp4")

    assert_golden("live_window_sliding_discontinuity.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 6
    assert parsed.discontinuity_sequence == 1
    assert [s.uri for s in parsed.segments] == [f"seg_{n:05d}.m4s" for n in (6, 7, 8, 9)]
    assert [s.duration for s in parsed.segments] == [2.0] * 4
    assert [s.discontinuity for s in parsed.segments] == [False, True, False, False]
    assert parsed.segments[0].program_date_time == T0 + timedelta(seconds=12)
    assert parsed.segments[0].init_section.uri == "init.mp4"
    assert parsed.target_duration == 2
    assert parsed.version == 7
    assert parsed.is_independent_segments
    assert not parsed.is_endlist
    assert parsed.playlist_type is None


def test_discontinuity_sequence_numbers_survive_the_window_sliding() -> None:
    everything = session(12, discontinuities=(0, 3, 4, 9))

    def numbers(window_end: int) -> dict[int, int]:
        window = live_window(everything[:window_end], 3)
        counter, out = window.discontinuity_sequence, {}
        for segment in window.segments:
            counter += segment.discontinuity
            out[segment.sequence] = counter
        return out

    seen: dict[int, int] = {}
    for end in range(1, 13):
        for sequence, number in numbers(end).items():
            assert seen.setdefault(sequence, number) == number


def test_a_window_larger_than_the_session_lists_everything() -> None:
    window = live_window(session(3), 6)
    assert (len(window.segments), window.media_sequence, window.discontinuity_sequence) == (3, 0, 0)
    with pytest.raises(ValueError, match="window size"):
        live_window(session(3), 0)


def test_ended_vod_playlist_has_type_and_endlist() -> None:
    segments = session(4)
    segments.append(SegmentEntry(4, "seg_00004.m4s", 1.2345))
    text = render_media_playlist(
        MediaPlaylist(
            segments, target_duration=2, map_uri="init.mp4", ended=True, playlist_type="VOD"
        )
    )

    assert_golden("vod_ended.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.is_endlist
    assert parsed.playlist_type == "vod"
    assert parsed.media_sequence == 0
    assert len(parsed.segments) == 5
    assert [s.duration for s in parsed.segments] == [2.0, 2.0, 2.0, 2.0, 1.234]


def test_gap_segment_keeps_its_extinf_and_uri() -> None:
    segments = session(4)
    segments[2] = SegmentEntry(2, "seg_00002.m4s", 2.0, T0 + timedelta(seconds=4), gap=True)
    text = render_media_playlist(
        MediaPlaylist(segments, target_duration=2, map_uri="init.mp4", playlist_type="EVENT")
    )

    assert_golden("gap_segment.m3u8", text)
    parsed = m3u8.loads(text)
    assert [s.gap_tag for s in parsed.segments] == [None, None, True, None]
    assert [s.uri for s in parsed.segments][2] == "seg_00002.m4s"
    assert parsed.playlist_type == "event"
    assert len(parsed.segments) == 4


def test_a_long_gop_presentation_fixes_its_target_duration_from_its_first_segment() -> None:
    # OBS's default 8.333 s GOP at a configured 2 s target, as the segmenter cuts it (ms).
    durations = [8.333, 8.334, 8.333, 8.333]
    segments = [SegmentEntry(n, f"seg_{n:05d}.m4s", d) for n, d in enumerate(durations)]
    target_duration = presentation_target_duration(2.0, durations[0])
    text = render_media_playlist(
        MediaPlaylist(segments, target_duration=target_duration, map_uri="init.mp4")
    )

    assert_golden("long_gop_target_duration.m3u8", text)
    parsed = m3u8.loads(text)
    # RFC 8216 4.3.3.1: every EXTINF *rounded to the nearest integer* <= target duration
    assert parsed.target_duration == 8
    assert all(round(s.duration) <= parsed.target_duration for s in parsed.segments)
    assert [s.duration for s in parsed.segments] == durations


def test_the_target_duration_stays_after_the_long_segment_that_fixed_it_left_the_window() -> None:
    # The presentation's first segment ran 2.6 s (an encoder starting late on a keyframe):
    # its target duration is 3 for good, though every segment listed now is 2 s.
    first = SegmentEntry(0, "seg_00000.m4s", 2.6, T0)
    later = session(7)
    everything = [first] + [
        replace(
            s,
            sequence=s.sequence + 1,
            uri=f"seg_{s.sequence + 1:05d}.m4s",
            program_date_time=s.program_date_time + timedelta(seconds=2.6),
        )
        for s in later
    ]
    target_duration = presentation_target_duration(2.0, everything[0].duration)
    text = render_window(everything, 4, target_duration, map_uri="init.mp4")

    assert_golden("live_window_after_long_segment.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.target_duration == 3
    assert [s.duration for s in parsed.segments] == [2.0] * 4
    assert parsed.media_sequence == 4


@pytest.mark.parametrize(
    ("durations", "fixed", "expected"),
    [
        ([2.0, 2.002], 2, 2),
        ([1.0, 0.4], 4, 4),  # a fixed value is kept whatever the window holds
        ([2.0, 8.333], 2, 2),  # even a segment longer than it does not change it
        ([0.3], None, 1),
        ([8.499], None, 8),
        ([8.4996], None, 9),  # rounds by the EXTINF as written: 8.500
        ([2.0, 6.7, 2.0], None, 7),  # not fixed: the max over all listed segments
    ],
)
def test_target_duration_is_the_fixed_one_or_the_smallest_every_extinf_fits(
    durations: list[float], fixed: int | None, expected: int
) -> None:
    segments = [SegmentEntry(n, f"s{n}.m4s", d) for n, d in enumerate(durations)]
    parsed = m3u8.loads(render_media_playlist(MediaPlaylist(segments, target_duration=fixed)))
    assert parsed.target_duration == expected


@pytest.mark.parametrize(
    ("target", "first", "expected"),
    [(2.0, 2.0, 2), (2.0, 1.2, 2), (2.0, 2.499, 2), (2.0, 2.5, 3), (1.5, 1.5, 2), (2.0, 8.333, 8)],
)
def test_a_presentation_target_duration_is_the_target_rounded_up_or_its_first_segment(
    target: float, first: float, expected: int
) -> None:
    assert presentation_target_duration(target, first) == expected


def test_the_longest_segment_a_target_duration_allows_rounds_down_to_it() -> None:
    for target_duration in (1, 2, 8):
        longest = max_segment_ticks(target_duration)
        assert rounded_extinf(longest / CLOCK_HZ) == target_duration
        assert rounded_extinf((longest + CLOCK_HZ // 1000) / CLOCK_HZ) == target_duration + 1


def test_live_and_event_playlists_always_say_their_discontinuity_sequence() -> None:
    live = render_media_playlist(MediaPlaylist(session(2), target_duration=2))
    event = render_media_playlist(
        MediaPlaylist(session(2), target_duration=2, playlist_type="EVENT")
    )
    vod = render_media_playlist(
        MediaPlaylist(session(2), target_duration=2, playlist_type="VOD", ended=True)
    )
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0\n" in live
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0\n" in event
    assert "DISCONTINUITY-SEQUENCE" not in vod


def test_master_playlist_lists_four_variants_in_the_given_order() -> None:
    """The order and attributes `packager.catalog.render_master` gives a 1080p60 ladder:
    the variant nearest 2 Mbit/s first, FRAME-RATE, AVERAGE-BANDWIDTH and
    CLOSED-CAPTIONS=NONE on every one."""

    def variant(name: str, bandwidth: int, average: int, video: str, size: tuple) -> Variant:
        return Variant(
            f"{name}/index.m3u8",
            bandwidth,
            f"{video},mp4a.40.2",
            average_bandwidth=average,
            resolution=size,
            frame_rate=59.94,
            closed_captions="NONE",
            name=name,
        )

    variants = [
        variant("480p", 1_750_000, 1_600_000, "avc1.64001f", (854, 480)),
        variant("source", 6_500_000, 6_000_000, "avc1.64002a", (1920, 1080)),
        variant("720p", 3_600_000, 3_300_000, "avc1.640020", (1280, 720)),
        variant("360p", 1_060_000, 970_000, "avc1.64001f", (640, 360)),
    ]
    text = render_master_playlist(variants)

    assert_golden("master_four_variants.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.is_variant
    assert parsed.is_independent_segments
    assert [p.uri for p in parsed.playlists] == [v.uri for v in variants]
    infos = [p.stream_info for p in parsed.playlists]
    assert [i.bandwidth for i in infos] == [v.bandwidth for v in variants]
    assert [i.average_bandwidth for i in infos] == [v.average_bandwidth for v in variants]
    assert [i.resolution for i in infos] == [v.resolution for v in variants]
    assert [i.codecs for i in infos] == [v.codecs for v in variants]
    assert [i.frame_rate for i in infos] == [59.94] * 4
    assert [i.closed_captions for i in infos] == ["NONE"] * 4


def test_closed_captions_none_is_an_enumerated_string_and_a_group_id_is_quoted() -> None:
    none = render_master_playlist([Variant("v.m3u8", 1000, "avc1.64001f", closed_captions="NONE")])
    assert "CLOSED-CAPTIONS=NONE\n" in none
    group = render_master_playlist([Variant("v.m3u8", 1000, "avc1.64001f", closed_captions="cc")])
    assert 'CLOSED-CAPTIONS="cc"\n' in group


def test_low_latency_parts_render_inside_their_segments() -> None:
    def parts(n: int, count: int) -> tuple[PartEntry, ...]:
        return tuple(
            PartEntry(f"seg_{n:05d}.part{i}.m4s", 0.5, independent=i == 0) for i in range(count)
        )

    segments = [
        SegmentEntry(n, f"seg_{n:05d}.m4s", 2.0, T0 + timedelta(seconds=2 * n), parts=parts(n, 4))
        for n in range(3)
    ]
    text = render_media_playlist(
        MediaPlaylist(
            segments,
            target_duration=2,
            map_uri="init.mp4",
            part_target=0.5,
            server_control=ServerControl(can_block_reload=True, part_hold_back=1.5),
            pending_parts=parts(3, 2),
            preload_hint=PreloadHint("seg_00003.part2.m4s"),
        )
    )

    assert_golden("ll_hls_parts.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.part_inf.part_target == 0.5
    assert parsed.server_control.can_block_reload == "YES"
    assert parsed.server_control.part_hold_back == 1.5
    assert [len(s.parts) for s in parsed.segments] == [4, 4, 4, 2]  # last: the open segment
    assert parsed.segments[0].parts[0].independent == "YES"
    assert parsed.preload_hint.uri == "seg_00003.part2.m4s"


def test_a_segment_with_its_own_init_section_gets_a_new_map_after_the_discontinuity() -> None:
    segments = session(4, discontinuities=(2,))
    segments[2] = SegmentEntry(
        2, "seg_00002.m4s", 2.0, T0 + timedelta(seconds=4), True, map_uri="init_1.mp4"
    )
    text = render_media_playlist(MediaPlaylist(segments, map_uri="init_0.mp4"))
    assert text.count("#EXT-X-MAP:") == 2
    assert '#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="init_1.mp4"\n' in text
    parsed = m3u8.loads(text)
    assert [s.init_section.uri for s in parsed.segments] == [
        "init_0.mp4",
        "init_0.mp4",
        "init_1.mp4",
        "init_1.mp4",
    ]


def test_program_date_time_has_milliseconds_and_a_zone() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 1, 123_999, tzinfo=UTC)
    assert format_program_date_time(moment) == "2024-05-01T12:00:01.123Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_program_date_time(plus_two) == "2024-05-01T14:00:01.123+02:00"
    minus = moment.astimezone(timezone(-timedelta(hours=5, minutes=30)))
    assert format_program_date_time(minus) == "2024-05-01T06:30:01.123-05:30"
    with pytest.raises(ValueError, match="no time zone"):
        format_program_date_time(datetime(2024, 5, 1))


@pytest.mark.parametrize(
    "bad_uri", ["", "a\nb.m4s", "a\rb.m4s", "#EXTINF.m4s", " lead.m4s", "x\x00"]
)
def test_uri_lines_that_a_parser_would_misread_are_refused(bad_uri: str) -> None:
    with pytest.raises(ValueError, match="URI"):
        render_media_playlist(MediaPlaylist([SegmentEntry(0, bad_uri, 2.0)]))
    with pytest.raises(ValueError, match="URI"):
        render_master_playlist([Variant(bad_uri, 1, "avc1.64001f")])


@pytest.mark.parametrize("bad_uri", ["", 'a"b.m4s', "a\nb.m4s", "a\x85b.m4s"])
def test_uris_that_cannot_be_quoted_strings_are_refused(bad_uri: str) -> None:
    segment = SegmentEntry(0, "ok.m4s", 2.0)
    with pytest.raises(ValueError, match="quoted-string"):
        render_media_playlist(MediaPlaylist([segment], map_uri=bad_uri))
    with pytest.raises(ValueError, match="quoted-string"):
        render_media_playlist(MediaPlaylist([segment], pending_parts=(PartEntry(bad_uri, 0.5),)))
    with pytest.raises(ValueError, match="quoted-string"):
        render_media_playlist(MediaPlaylist([segment], preload_hint=PreloadHint(bad_uri)))


@pytest.mark.parametrize(
    "variant",
    [
        Variant("v.m3u8", 0, "avc1.64001f"),
        Variant("v.m3u8", 1000, ""),
        Variant("v.m3u8", 1000, 'avc1"'),
        Variant("v.m3u8", 1000, "avc1.64001f", average_bandwidth=-1),
        Variant("v.m3u8", 1000, "avc1.64001f", resolution=(0, 720)),
        Variant("v.m3u8", 1000, "avc1.64001f", frame_rate=float("nan")),
        Variant("v.m3u8", 1000, "avc1.64001f", name="a\nb"),
        Variant("v.m3u8", 1000, "avc1.64001f", closed_captions='a"b'),
    ],
)
def test_variant_attributes_that_cannot_be_encoded_are_refused(variant: Variant) -> None:
    with pytest.raises(ValueError):
        render_master_playlist([variant])


@pytest.mark.parametrize(
    ("playlist", "message"),
    [
        (MediaPlaylist([SegmentEntry(0, "a.m4s", 2.0)], playlist_type="LIVE"), "playlist_type"),
        (MediaPlaylist([SegmentEntry(0, "a.m4s", 2.0)], playlist_type="VOD"), "ended=True"),
        (MediaPlaylist([SegmentEntry(0, "a.m4s", -1.0)]), "segment duration"),
        (MediaPlaylist([SegmentEntry(0, "a.m4s", float("inf"))]), "segment duration"),
        (MediaPlaylist([SegmentEntry(0, "a", 2.0), SegmentEntry(2, "b", 2.0)]), "consecutive"),
        (MediaPlaylist([SegmentEntry(5, "a.m4s", 2.0)], media_sequence=4), "media_sequence"),
        (MediaPlaylist([SegmentEntry(0, "a.m4s", 2.0, title="x\ny")]), "title"),
        (MediaPlaylist([]), "target_duration"),
        (MediaPlaylist([SegmentEntry(0, "a.m4s", 2.0, datetime(2024, 1, 1))]), "time zone"),
    ],
)
def test_media_playlists_that_cannot_be_encoded_are_refused(
    playlist: MediaPlaylist, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_media_playlist(playlist)


def test_extinf_has_three_decimals_and_an_optional_title() -> None:
    text = render_media_playlist(
        MediaPlaylist([SegmentEntry(0, "a.m4s", 2, title="intro, part 1")], target_duration=2)
    )
    assert "#EXTINF:2.000,intro, part 1\na.m4s\n" in text
    assert m3u8.loads(text).segments[0].title == "intro, part 1"


def test_an_empty_live_playlist_renders_with_the_configured_target() -> None:
    text = render_media_playlist(MediaPlaylist([], target_duration=2, map_uri="init.mp4"))
    parsed = m3u8.loads(text)
    assert (parsed.target_duration, parsed.media_sequence, len(parsed.segments)) == (2, 0, 0)
