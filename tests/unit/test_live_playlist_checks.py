"""The end-to-end tests' playlist checker catches what it claims to (a checker that cannot
fail proves nothing)."""

from __future__ import annotations

import pytest

from tests.live_playlist_checks import LivePlaylistChecks

URL = "http://x/hls/s/source/index.m3u8"


def playlist(
    first: int,
    count: int,
    *,
    td: int = 2,
    dsn: int | None = 0,
    extinf: str = "2.000",
    gaps: tuple[int, ...] = (),
    ended: bool = False,
    uri: str = "a",
) -> str:
    lines = ["#EXTM3U", f"#EXT-X-TARGETDURATION:{td}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    if dsn is not None:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dsn}")
    lines.append('#EXT-X-MAP:URI="init.mp4"')
    for n in range(first, first + count):
        if n in gaps:
            lines.append("#EXT-X-GAP")
        lines += [f"#EXTINF:{extinf},", f"{uri}{n}.m4s"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def checks(status: int = 200) -> LivePlaylistChecks:
    return LivePlaylistChecks(lambda url: status, slack_seconds=0.5)


def test_a_live_playlist_that_keeps_the_rules_has_no_violation() -> None:
    checker = checks()
    for step in range(6):
        checker.check(URL, playlist(step, 3, gaps=(4,)), at=2.0 * step)
    checker.check(URL, playlist(5, 3, gaps=(4,), ended=True), at=12.5)
    checker.check(URL, playlist(5, 3, gaps=(4,), ended=True), at=20.0)
    assert checker.violations == []
    assert checker.gaps_seen == {(URL, 4)}
    assert checker.longest_wait == {URL: 2.0}


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        ([(playlist(0, 3), 0), (playlist(0, 3, td=3), 1)], "TARGETDURATION 3"),
        ([(playlist(0, 3, extinf="2.500"), 0)], "EXTINF 2.500 is over"),
        ([(playlist(0, 3, dsn=None), 0)], "no EXT-X-DISCONTINUITY-SEQUENCE"),
        ([(playlist(5, 3), 0), (playlist(4, 4), 1)], "MEDIA-SEQUENCE went back from 5 to 4"),
        ([(playlist(0, 3, dsn=2), 0), (playlist(1, 3, dsn=1), 1)], "went back from 2 to 1"),
        ([(playlist(0, 3), 0), (playlist(0, 3), 2), (playlist(0, 3), 3.6)], "no new segment"),
        ([(playlist(0, 3), 0), (playlist(0, 3, gaps=(2,)), 1)], "segment 2 changed"),
        ([(playlist(0, 3), 0), (playlist(0, 3, uri="b"), 1)], "segment 0 changed"),
        ([(playlist(0, 3, ended=True), 0), (playlist(0, 4, ended=True), 1)], "after EXT-X-ENDLIST"),
    ],
)
def test_each_broken_rule_is_reported(responses: list[tuple[str, float]], expected: str) -> None:
    checker = checks()
    for text, at in responses:
        checker.check(URL, text, at)
    assert any(expected in violation for violation in checker.violations), checker.violations


def test_a_listed_uri_that_does_not_answer_is_reported_but_a_gap_is_not_fetched() -> None:
    fetched: list[str] = []

    def answers(url: str) -> int:
        fetched.append(url)
        return 404

    checker = LivePlaylistChecks(answers, slack_seconds=0.5)
    checker.check(URL, playlist(0, 2, gaps=(1,)), at=0)
    assert fetched == ["http://x/hls/s/source/a0.m4s", "http://x/hls/s/source/init.mp4"]
    assert len(checker.violations) == 2
