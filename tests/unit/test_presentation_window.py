"""A stream URL's window across sessions and outages, as the catalog lists timeline rows.

The rows are built in memory (no database): what the catalog's queries return for them is
checked in tests/integration/test_presentation_playlists.py. Goldens as in test_playlist.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import m3u8

from core.models import Rendition, Segment, SegmentStatus
from media.hls.slate import SlateFormat
from packager import slate_uris
from packager.catalog import stream_uri, timeline_entry
from packager.keys import init_name, media_key, segment_name
from tests.unit.test_playlist import T0, assert_golden, render_window

STREAM = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
FIRST = uuid.UUID("00000000-0000-0000-0000-000000000001")
SECOND = uuid.UUID("00000000-0000-0000-0000-000000000002")


class Timeline:
    """Source rows as the ingest and the outage sweep write them, with their sessions."""

    def __init__(self) -> None:
        self.rows: list[tuple[Segment, uuid.UUID]] = []
        self.clock = T0

    def media(self, session: uuid.UUID, count: int, *, init: int = 0, joins: bool = False) -> None:
        for n in range(count):
            self._add(session, 2.0, SegmentStatus.READY, init, discontinuity=joins and n == 0)

    def gaps(self, count: int, target_duration: int = 2) -> None:
        """An outage, as `timeline.gaps_due` writes it: its first gap starts a discontinuity."""
        session, init = self.rows[-1][1], int(self.rows[-1][0].init_key[-5])
        for n in range(count):
            self._add(
                session, float(target_duration), SegmentStatus.GAP, init, discontinuity=n == 0
            )

    def _add(
        self, session: uuid.UUID, duration: float, status: str, init: int, *, discontinuity: bool
    ) -> None:
        sequence = len(self.rows)
        row = Segment(
            sequence=sequence,
            duration=duration,
            program_date_time=self.clock,
            discontinuity=discontinuity,
            object_key=media_key(STREAM, "source", session, segment_name(sequence)),
            init_key=media_key(STREAM, "source", session, init_name(init)),
            status=status,
        )
        self.rows.append((row, session))
        self.clock += timedelta(seconds=duration)

    def source_window(self, size: int, slate: SlateFormat | None = None) -> str:
        entries = [
            timeline_entry(row, session, row, stream_uri, late_is_gap=True, slate=slate)
            for row, session in self.rows
        ]
        return render_window(entries, size, 2)


def test_a_window_spanning_two_sessions_joins_them_with_a_discontinuity_and_a_new_map() -> None:
    timeline = Timeline()
    timeline.media(FIRST, 6)
    timeline.gaps(2)  # the hold, until the streamer came back
    timeline.media(SECOND, 4, joins=True)
    text = timeline.source_window(8)

    assert_golden("live_window_two_sessions.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 4
    assert parsed.discontinuity_sequence == 0
    assert [s.uri.split("/")[0] for s in parsed.segments] == [str(FIRST)] * 4 + [str(SECOND)] * 4
    assert [s.gap_tag for s in parsed.segments] == [None, None, True, True, None, None, None, None]
    assert [n for n, s in enumerate(parsed.segments) if s.discontinuity] == [2, 4]
    assert parsed.segments[4].init_section.uri == f"{SECOND}/init_0.mp4"
    assert parsed.segments[4].program_date_time == T0 + timedelta(seconds=16)


def test_an_outage_advances_the_window_with_gaps_and_the_resumed_publish_follows_them() -> None:
    timeline = Timeline()
    timeline.media(FIRST, 4)
    timeline.gaps(3)
    timeline.media(FIRST, 3, init=1, joins=True)  # the reconnect: same session, new init
    text = timeline.source_window(8)

    assert_golden("live_outage_gap_segments.m3u8", text)
    parsed = m3u8.loads(text)
    assert parsed.media_sequence == 2
    assert [s.gap_tag for s in parsed.segments][2:5] == [True, True, True]
    assert [s.duration for s in parsed.segments][2:5] == [2.0, 2.0, 2.0]
    gap_times = [s.program_date_time for s in parsed.segments[1:6]]
    assert all(
        b - a == timedelta(seconds=2) for a, b in zip(gap_times, gap_times[1:], strict=False)
    )
    assert parsed.segments[5].discontinuity
    assert parsed.segments[5].init_section.uri == f"{FIRST}/init_1.mp4"
    assert text.count("#EXT-X-MAP:") == 2


def test_a_rung_a_session_does_not_have_lists_its_sequence_numbers_as_gaps() -> None:
    timeline = Timeline()
    timeline.media(FIRST, 3)
    timeline.media(SECOND, 3, joins=True)
    # The first session had a 720p rung; the second publisher's source is too small for one.
    rung = {
        row.sequence: Segment(
            sequence=row.sequence,
            duration=row.duration,
            object_key=media_key(STREAM, "720p", FIRST, segment_name(row.sequence)),
            init_key=media_key(STREAM, "720p", FIRST, init_name(0)),
            status=SegmentStatus.READY,
        )
        for row, session in timeline.rows
        if session == FIRST
    }
    entries = [
        timeline_entry(row, session, rung.get(row.sequence), stream_uri, late_is_gap=True)
        for row, session in timeline.rows
    ]
    assert [(e.gap, e.discontinuity) for e in entries] == [(False, False)] * 3 + [
        (True, True),
        (True, False),
        (True, False),
    ]
    assert [e.uri for e in entries][3:] == [f"{SECOND}/{segment_name(n)}" for n in (3, 4, 5)]
    assert [e.map_uri for e in entries][3:] == [None] * 3


SLATE_360P = SlateFormat(width=640, height=360, sample_rate=48_000, channels=2)


def test_the_stream_url_lists_an_outage_as_a_slate_between_two_discontinuities() -> None:
    """Every variant has the outage at once, at the live edge: a slate plays where a GAP
    would leave a player nothing to switch to (Shaka gives up on it)."""
    timeline = Timeline()
    timeline.media(FIRST, 4)
    timeline.gaps(3)
    timeline.media(FIRST, 3, init=1, joins=True)
    text = timeline.source_window(8, SLATE_360P)

    assert_golden("live_outage_slate.m3u8", text)
    parsed = m3u8.loads(text)
    assert [s.gap_tag for s in parsed.segments] == [None] * 8
    assert [n for n, s in enumerate(parsed.segments) if s.discontinuity] == [2, 5]
    assert [s.uri for s in parsed.segments][2:5] == [
        f"slate/v640x360-a48000x2/{n:08d}_2000.m4s" for n in (4, 5, 6)
    ]
    assert [s.init_section.uri for s in parsed.segments] == [f"{FIRST}/init_0.mp4"] * 2 + [
        "slate/v640x360-a48000x2/init.mp4"
    ] * 3 + [f"{FIRST}/init_1.mp4"] * 3
    assert [s.duration for s in parsed.segments][2:5] == [2.0, 2.0, 2.0]
    assert text.count("#EXT-X-MAP:") == 3


def test_a_slate_uri_names_its_bytes_and_nothing_else() -> None:
    uri = slate_uris.segment_uri(SLATE_360P, 12, 2.0)
    token, name = uri.split("/")[1:]
    assert slate_uris.parse_format(token) == SLATE_360P
    assert slate_uris.render(token, name) is not None
    assert slate_uris.render(token, slate_uris.SLATE_INIT) is not None
    video_only = SlateFormat(width=320, height=180, sample_rate=None, channels=None)
    assert slate_uris.parse_format(slate_uris.format_token(video_only)) == video_only
    for token, name in [
        ("v640x360-a48000x2", "00000012_0.m4s"),  # no duration
        ("v640x360-a48000x2", "00000012_60001.m4s"),  # longer than any target duration
        ("v640x360-a48000x2", "12_2000.m4s"),
        ("v640x360-a48000x2", "init.mp4\n"),
        ("v641x360", "init.mp4"),  # odd: the slate refuses it
        ("v99999x360", "init.mp4"),
        ("a48000x3", "init.mp4"),
        ("", "init.mp4"),
        ("-a48000x2", "init.mp4"),
        ("v640x360a48000x2x", "init.mp4"),
    ]:
        assert slate_uris.render(token, name) is None, (token, name)


def test_a_renditions_slate_takes_its_size_and_audio_from_its_row() -> None:
    rung = Rendition(name="360p", width=641, height=360, codecs="avc1.64001e,mp4a.40.2")
    assert slate_uris.slate_format(rung) == SlateFormat(640, 360, 48_000, 2)
    silent = Rendition(name="source", width=1920, height=1080, codecs="avc1.640028")
    assert slate_uris.slate_format(silent) == SlateFormat(1920, 1080, None, None)
    huge = Rendition(name="source", width=7680, height=4320, codecs="hvc1.1.6.L150.B0,mp4a.40.2")
    assert slate_uris.slate_format(huge) == SlateFormat(4096, 2304, 48_000, 2)
    assert slate_uris.slate_format(None) == SlateFormat(640, 360, 48_000, 2)
