"""The playlist checker itself: for every rule, a sequence of responses that breaks it (so the
checker provably fails) and, for the subtle ones, the nearest one that does not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.hls_checker import RULES, Fetch, HlsChecker

BASE = "http://hls.test/hls/stream/"
MASTER = BASE + "master.m3u8"
SOURCE = BASE + "source/index.m3u8"
RUNG = BASE + "360p/index.m3u8"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ASKED = {"origin": "https://player.example", "accept-encoding": "gzip, deflate"}
SENT = {"content-encoding": "gzip", "access-control-allow-origin": "*"}
LIVE_HEADERS = {**SENT, "cache-control": "no-cache"}


def media(
    first: int = 0,
    count: int = 6,
    *,
    target: str = "2",
    duration: str = "2.000",
    dsn: int | None = 0,
    ended: bool = False,
    playlist_type: str | None = None,
    version: str = "7",
    map_line: str = '#EXT-X-MAP:URI="init_0.mp4"',
    pdt_offset: float = 0.0,
    pdt: bool = True,
    discontinuity_at: int | None = None,
    gap_at: int | None = None,
    uri: Callable[[int], str] = lambda n: f"{n:08d}.m4s",
    head: Sequence[str] = (),
    body: Sequence[str] = (),
) -> str:
    """A media playlist as the fixed server would write it, with knobs to break it."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{target}"]
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
    if dsn is not None:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dsn}")
    if playlist_type:
        lines.append(f"#EXT-X-PLAYLIST-TYPE:{playlist_type}")
    lines += [*head, "#EXT-X-INDEPENDENT-SEGMENTS"]
    if map_line:
        lines.append(map_line)
    for n in range(first, first + count):
        if n == discontinuity_at:
            lines.append("#EXT-X-DISCONTINUITY")
        if pdt:
            at = T0 + timedelta(seconds=2 * n + pdt_offset)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{at.isoformat(timespec='milliseconds')}")
        if n == gap_at:
            lines.append("#EXT-X-GAP")
        lines += [f"#EXTINF:{duration},", uri(n)]
    lines += body
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master(*variants: str) -> str:
    lines = ["#EXTM3U", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for attributes in variants:
        name = "source" if "1920x1080" in attributes else "360p"
        lines += [f"#EXT-X-STREAM-INF:{attributes}", f"{name}/index.m3u8"]
    return "\n".join(lines) + "\n"


SOURCE_VARIANT = (
    'BANDWIDTH=6600000,AVERAGE-BANDWIDTH=6000000,CODECS="avc1.640028,mp4a.40.2",'
    "RESOLUTION=1920x1080,FRAME-RATE=30.000,CLOSED-CAPTIONS=NONE"
)
RUNG_VARIANT = (
    'BANDWIDTH=1000000,AVERAGE-BANDWIDTH=900000,CODECS="avc1.64001e,mp4a.40.2",'
    "RESOLUTION=640x360,FRAME-RATE=30.000,CLOSED-CAPTIONS=NONE"
)


def ok(url: str, text: str, at: float = 0.0, headers: dict | None = None) -> Fetch:
    """A 200 answer received at `at` (sent 50 ms before)."""
    live = "#EXT-X-ENDLIST" not in text and "#EXT-X-STREAM-INF" not in text
    answer = headers if headers is not None else (LIVE_HEADERS if live else SENT)
    return Fetch(url, 200, answer, text.encode(), at - 0.05, at, ASKED)


def shown(*fetches: Fetch) -> HlsChecker:
    checker = HlsChecker()
    for fetch in fetches:
        checker.playlist(fetch)
    return checker


def live_ladder(seconds: int) -> list[Fetch]:
    """A master with two variants and both playlists, polled each second while a segment
    arrives every two; then the stream ends."""
    fetches = []
    for t in range(seconds):
        produced = t // 2 + 1
        first = max(0, produced - 6)
        fetches.append(ok(MASTER, master(SOURCE_VARIANT, RUNG_VARIANT), t))
        for url in (SOURCE, RUNG):
            fetches.append(ok(url, media(first, produced - first), t + 0.01))
    produced = seconds // 2
    for url in (SOURCE, RUNG):
        fetches.append(ok(url, media(produced - 6, 6, ended=True), seconds + 0.01))
    return fetches


def test_a_live_ladder_followed_to_its_end_breaks_no_rule() -> None:
    checker = shown(*live_ladder(40))
    assert checker.violations == [], checker.report()


def test_what_a_master_lists_and_a_media_playlist_lists_is_handed_back() -> None:
    checker = HlsChecker()
    listing = checker.playlist(ok(MASTER, master(SOURCE_VARIANT, RUNG_VARIANT)))
    assert listing.kind == "master" and listing.urls == (SOURCE, RUNG)
    listing = checker.playlist(ok(SOURCE, media(0, 3, gap_at=1)))
    assert listing.kind == "media"
    # the GAP segment is not fetched: it need not exist
    names = ("00000000.m4s", "00000002.m4s", "init_0.mp4")
    assert listing.urls == tuple(BASE + "source/" + name for name in names)


def _object(status: int) -> HlsChecker:
    checker = HlsChecker()
    checker.media_object(Fetch(BASE + "source/00000001.m4s", status, SENT, b"", 0, 0, ASKED))
    return checker


def _across(first: str, second: str) -> HlsChecker:
    return shown(
        ok(MASTER, master(SOURCE_VARIANT, RUNG_VARIANT)),
        ok(SOURCE, first, 0.1),
        ok(RUNG, second, 0.2),
    )


BAD: dict[str, Callable[[], HlsChecker]] = {
    "RFC 4.1": lambda: shown(ok(SOURCE, "\ufeff" + media())),
    "RFC 4.2": lambda: shown(ok(SOURCE, media(map_line='#EXT-X-MAP:URI="a.mp4",URI="b.mp4"'))),
    "RFC 4.4.1.1": lambda: shown(ok(SOURCE, "\n" + media())),
    "RFC 4.4.1.2": lambda: shown(ok(SOURCE, media(head=["#EXT-X-VERSION:7"]))),
    "RFC 8": lambda: shown(ok(SOURCE, media(version="3"))),
    "RFC 4.4.3": lambda: shown(ok(SOURCE, media(head=["#EXT-X-TARGETDURATION:2"]))),
    "RFC 4.4.3.1": lambda: shown(ok(SOURCE, media(target="2.5", duration="2.000"))),
    "RFC 4.4.3.2": lambda: shown(ok(SOURCE, media(body=["#EXT-X-MEDIA-SEQUENCE:0"]))),
    "RFC 4.4.3.3": lambda: shown(
        ok(SOURCE, media(dsn=None, body=["#EXT-X-DISCONTINUITY-SEQUENCE:0"]))
    ),
    "RFC 4.4.3.5": lambda: shown(ok(SOURCE, media(playlist_type="LIVE"))),
    "RFC 4.4.4.1": lambda: shown(ok(SOURCE, media(body=["00000099.m4s"]))),
    "RFC 4.4.4.5": lambda: shown(ok(SOURCE, media(map_line="#EXT-X-MAP:URI=init_0.mp4"))),
    "RFC 4.4.4.6": lambda: shown(
        ok(
            SOURCE,
            media(body=["#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:20", "#EXTINF:2,", "x.m4s"]),
        )
    ),
    "RFC 4.4.6": lambda: shown(ok(SOURCE, media(head=["#EXT-X-MEDIA:TYPE=AUDIO"]))),
    "RFC 4.4.6.2": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT.replace("BANDWIDTH=6600000,", "")))
    ),
    "RFC 6.2.1-M1": lambda: shown(ok(SOURCE, media(duration="2.500"))),
    "RFC 6.2.1-M6": lambda: _object(404),
    "RFC 6.2.1-M10": lambda: shown(
        ok(SOURCE, media(0, 6)), ok(SOURCE, media(1, 6, uri=lambda n: f"b{n}.m4s"), 1)
    ),
    "RFC 6.2.1-M11": lambda: shown(
        ok(SOURCE, media(0, 6, ended=True, playlist_type="VOD")),
        ok(SOURCE, media(0, 6, ended=True, playlist_type="VOD", pdt_offset=1), 1),
    ),
    "RFC 6.2.1-M13": lambda: shown(ok(SOURCE, media(0, 6)), ok(SOURCE, media(1, 6, target="3"), 1)),
    "RFC 6.2.1-M20": lambda: shown(
        ok(SOURCE, media(0, 6, ended=True)), ok(SOURCE, media(1, 6, ended=True), 1)
    ),
    "RFC 6.2.1-M22": lambda: shown(ok(SOURCE, media(0, 6)), ok(SOURCE, media(0, 6), 3.2)),
    "RFC 6.2.2-M3": lambda: shown(ok(SOURCE, media(5, 6)), ok(SOURCE, media(0, 6), 1)),
    "RFC 6.2.2-M6": lambda: shown(ok(SOURCE, media(10, 2))),
    "RFC 6.2.2-M11": lambda: shown(
        ok(SOURCE, media(0, 6, dsn=2)), ok(SOURCE, media(1, 6, dsn=1), 1)
    ),
    "RFC 6.2.2-M12": lambda: shown(
        ok(SOURCE, media(0, 6, playlist_type="EVENT")),
        ok(SOURCE, media(1, 6, playlist_type="EVENT"), 1),
    ),
    "RFC 6.2.4-M2c": lambda: _across(media(0, 6), media(0, 6, dsn=1)),
    "RFC 6.2.4-M2d": lambda: _across(media(0, 6), media(0, 6, target="3")),
    "RFC 6.2.4-M2h": lambda: _across(media(0, 6), media(0, 6, pdt_offset=0.5)),
    "APPLE 8.4": lambda: shown(ok(SOURCE, media(pdt=False))),
    "APPLE 8.11": lambda: shown(ok(SOURCE, media(10, 5))),
    "APPLE 8.17": lambda: shown(ok(SOURCE, media(dsn=None))),
    "APPLE 8.20": lambda: shown(ok(SOURCE, media(map_line=""))),
    "APPLE 9.1": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT.replace('CODECS="avc1.640028,mp4a.40.2",', "")))
    ),
    "APPLE 9.2": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT.replace("RESOLUTION=1920x1080,", "")))
    ),
    "APPLE 9.14": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT.replace("AVERAGE-BANDWIDTH=6000000,", "")))
    ),
    "APPLE 9.15": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT.replace("FRAME-RATE=30.000,", "")))
    ),
    "APPLE 10.1": lambda: shown(
        ok(SOURCE, media(), headers={**LIVE_HEADERS, "content-encoding": "identity"})
    ),
    "NEBULA master-stable": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT)), ok(MASTER, master(SOURCE_VARIANT, RUNG_VARIANT), 1)
    ),
    "NEBULA listed-playlist": lambda: shown(
        ok(MASTER, master(SOURCE_VARIANT)), Fetch(SOURCE, 404, SENT, b"", 0.1, 0.2, ASKED)
    ),
    "NEBULA cors": lambda: shown(
        ok(SOURCE, media(), headers={"content-encoding": "gzip", "cache-control": "no-cache"})
    ),
    "NEBULA live-fresh": lambda: shown(
        ok(SOURCE, media(), headers={**SENT, "cache-control": "public, max-age=3600"})
    ),
}

# The nearest thing that is allowed, for the rules with a line to draw.
GOOD: dict[str, Callable[[], HlsChecker]] = {
    "RFC 6.2.1-M1": lambda: shown(ok(SOURCE, media(duration="2.499"))),
    "RFC 6.2.1-M6": lambda: _object(200),
    "RFC 6.2.1-M20": lambda: shown(
        ok(SOURCE, media(0, 6, ended=True, gap_at=3)), ok(SOURCE, media(0, 6, ended=True), 1)
    ),
    "RFC 6.2.1-M22": lambda: shown(ok(SOURCE, media(0, 6)), ok(SOURCE, media(0, 6), 2.9)),
    "RFC 6.2.2-M6": lambda: shown(ok(SOURCE, media(10, 6))),
    "APPLE 8.11": lambda: shown(ok(SOURCE, media(0, 5))),
    "APPLE 8.17": lambda: shown(ok(SOURCE, media(dsn=None, ended=True, playlist_type="VOD"))),
    "APPLE 9.2": lambda: shown(
        ok(MASTER, master('BANDWIDTH=130000,AVERAGE-BANDWIDTH=128000,CODECS="mp4a.40.2"'))
    ),
    "RFC 6.2.4-M2h": lambda: _across(media(0, 6), media(0, 6, pdt_offset=0.0005)),
    "NEBULA live-fresh": lambda: shown(
        ok(SOURCE, media(), headers={**SENT, "cache-control": "public, max-age=1"}),
        ok(RUNG, media(ended=True), headers={**SENT, "cache-control": "public, max-age=3600"}),
    ),
    "NEBULA listed-playlist": lambda: shown(Fetch(SOURCE, 404, SENT, b"", 0.1, 0.2, ASKED)),
}


def test_every_rule_has_a_response_sequence_that_breaks_it() -> None:
    assert set(BAD) == set(RULES)


@pytest.mark.parametrize("rule", sorted(BAD))
def test_the_checker_reports_a_broken_rule_with_its_url(rule: str) -> None:
    checker = BAD[rule]()
    assert rule in checker.rules_broken(), checker.report()
    [violation] = [v for v in checker.violations if v.rule == rule]
    assert violation.url.startswith(BASE)
    assert violation.message


@pytest.mark.parametrize("rule", sorted(GOOD))
def test_the_nearest_allowed_case_is_not_reported(rule: str) -> None:
    checker = GOOD[rule]()
    assert checker.violations == [], checker.report()


def test_a_violation_shows_the_offending_lines() -> None:
    checker = BAD["RFC 6.2.1-M1"]()
    [violation] = checker.violations
    assert violation.lines[0] == "3: #EXT-X-TARGETDURATION:2"
    assert violation.lines[1].endswith("#EXTINF:2.500,")
    assert "RFC 6.2.1-M1" in str(violation) and SOURCE in str(violation)


def test_a_stalled_playlist_is_reported_once_per_stall_and_counted() -> None:
    fetches = [ok(SOURCE, media(0, 6), t) for t in (0, 1, 2, 3, 4, 5)]
    checker = shown(*fetches)
    [violation] = checker.violations
    assert violation.rule == "RFC 6.2.1-M22"
    assert "after segment 5" in violation.message


def test_media_objects_of_one_folder_are_reported_once_and_counted() -> None:
    checker = HlsChecker()
    for n in range(3):
        checker.media_object(Fetch(BASE + f"source/{n:08d}.m4s", 404, SENT, b"", 0, 0, ASKED))
    [violation] = checker.violations
    assert violation.url == BASE + "source/00000000.m4s"
    assert checker.rule_counts() == {"RFC 6.2.1-M6": 3}
    assert "(seen 3 times)" in checker.report()


def test_the_first_time_media_was_listed_from_a_segment_on_is_kept() -> None:
    checker = shown(
        ok(RUNG, media(0, 4), 1.0),
        ok(RUNG, media(0, 5, gap_at=4), 2.0),  # segment 4 as a GAP: not media yet
        ok(RUNG, media(0, 6), 3.0),
    )
    assert checker.first_media_at(RUNG, 3) == 1.0
    assert checker.first_media_at(RUNG, 4) == 3.0
    assert checker.first_media_at(RUNG, 6) is None
    assert checker.first_media_at(SOURCE, 0) is None
