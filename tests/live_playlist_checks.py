"""The rules a live media playlist keeps, per response and over time, in one small checker.

RFC 8216bis and Apple's HLS authoring spec, as far as a poller can see them: one
EXT-X-TARGETDURATION for every playlist of the presentation, never changing; every EXTINF
rounded to the nearest integer at most that; EXT-X-MEDIA-SEQUENCE and
EXT-X-DISCONTINUITY-SEQUENCE present and never going back; a segment once listed keeps its
URI, its GAP flag and its discontinuity sequence number; a new segment at least every 1.5
target durations until EXT-X-ENDLIST, and nothing changes after it; every listed URI (GAP
segments excepted) and EXT-X-MAP answers. An end-to-end test feeds it every response it
polls and asserts that `violations` stayed empty. Written from the specifications, not from
the code under test, so it shares none of its rounding or parsing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urljoin

_TAG = re.compile(r"^#(EXT[A-Z-]*)(?::(.*))?$")
_MAP_URI = re.compile(r'URI="([^"]+)"')
_HEADER_TAGS = (
    "EXT-X-TARGETDURATION",
    "EXT-X-MEDIA-SEQUENCE",
    "EXT-X-DISCONTINUITY-SEQUENCE",
    "EXT-X-ENDLIST",
)


@dataclass(frozen=True, slots=True)
class ListedSegment:
    sequence: int
    uri: str
    duration_text: str
    gap: bool
    discontinuity_number: int  # EXT-X-DISCONTINUITY-SEQUENCE plus the tags before it
    map_uri: str | None


@dataclass(frozen=True, slots=True)
class ParsedPlaylist:
    target_duration: int | None
    media_sequence: int | None
    discontinuity_sequence: int | None
    ended: bool
    segments: tuple[ListedSegment, ...]


def parse_media_playlist(text: str) -> ParsedPlaylist:
    """The tags the rules look at, read line by line."""
    tags: dict[str, str] = {}
    segments: list[ListedSegment] = []
    pending: dict[str, str] = {}
    discontinuities = 0
    current_map: str | None = None
    for line in text.splitlines():
        match = _TAG.match(line)
        if match:
            name, value = match.group(1), match.group(2) or ""
            if name in _HEADER_TAGS:
                tags[name] = value
            elif name == "EXT-X-MAP":
                current_map = _MAP_URI.search(value).group(1)
            elif name in ("EXTINF", "EXT-X-GAP", "EXT-X-DISCONTINUITY"):
                pending[name] = value
            continue
        if not line or line.startswith("#"):
            continue
        discontinuities += "EXT-X-DISCONTINUITY" in pending
        first = int(tags.get("EXT-X-MEDIA-SEQUENCE", "0"))
        segments.append(
            ListedSegment(
                sequence=first + len(segments),
                uri=line,
                duration_text=pending.get("EXTINF", "").split(",")[0],
                gap="EXT-X-GAP" in pending,
                discontinuity_number=int(tags.get("EXT-X-DISCONTINUITY-SEQUENCE", "0"))
                + discontinuities,
                map_uri=None if "EXT-X-GAP" in pending else current_map,  # not loaded
            )
        )
        pending = {}

    def number(name: str) -> int | None:
        return int(tags[name]) if name in tags else None

    return ParsedPlaylist(
        number("EXT-X-TARGETDURATION"),
        number("EXT-X-MEDIA-SEQUENCE"),
        number("EXT-X-DISCONTINUITY-SEQUENCE"),
        "EXT-X-ENDLIST" in tags,
        tuple(segments),
    )


@dataclass
class _Seen:
    """What one playlist URL showed so far."""

    last: ParsedPlaylist
    text: str
    newest: int | None  # the highest sequence listed
    newest_at: float  # when it first appeared
    listed: dict[int, ListedSegment] = field(default_factory=dict)
    reported_stall: bool = False


class LivePlaylistChecks:
    """Feed it every response (`check`); `violations` says what broke, in words.

    `answers(url)` fetches a listed URI and returns its HTTP status; `slack_seconds` is what
    the polling itself adds to a measured wait (about one poll interval).
    """

    def __init__(self, answers: Callable[[str], int], slack_seconds: float) -> None:
        self.answers = answers
        self.slack_seconds = slack_seconds
        self.violations: list[str] = []
        self.target_duration: int | None = None
        self.responses = 0
        self.longest_wait: dict[str, float] = {}  # longest time without a new segment
        self.gaps_seen: set[tuple[str, int]] = set()
        self._seen: dict[str, _Seen] = {}
        self._answered: set[str] = set()

    def missing(self, url: str, status: int) -> None:
        """A playlist a master listed did not answer."""
        self.violations.append(f"{url}: answered {status}")

    def check(self, url: str, text: str, at: float) -> None:
        self.responses += 1
        playlist = parse_media_playlist(text)
        self._check_response(url, playlist)
        seen = self._seen.get(url)
        if seen is None:
            newest = playlist.segments[-1].sequence if playlist.segments else None
            self._seen[url] = seen = _Seen(playlist, text, newest, at)
        else:
            self._check_change(url, seen, playlist, text, at)
        for segment in playlist.segments:
            self._check_segment(url, seen, segment)

    def _check_response(self, url: str, playlist: ParsedPlaylist) -> None:
        if playlist.target_duration is None:
            self.violations.append(f"{url}: no EXT-X-TARGETDURATION")
            return
        if self.target_duration is None:
            self.target_duration = playlist.target_duration
        elif playlist.target_duration != self.target_duration:
            self.violations.append(
                f"{url}: EXT-X-TARGETDURATION {playlist.target_duration}, elsewhere or earlier"
                f" {self.target_duration}"
            )
        if playlist.media_sequence is None:
            self.violations.append(f"{url}: no EXT-X-MEDIA-SEQUENCE")
        if playlist.discontinuity_sequence is None:
            self.violations.append(f"{url}: no EXT-X-DISCONTINUITY-SEQUENCE")
        for segment in playlist.segments:
            rounded = Decimal(segment.duration_text).to_integral_value(rounding=ROUND_HALF_UP)
            if rounded > playlist.target_duration:
                self.violations.append(
                    f"{url}: segment {segment.sequence} EXTINF {segment.duration_text} is over"
                    f" the target duration {playlist.target_duration}"
                )

    def _check_change(
        self, url: str, seen: _Seen, playlist: ParsedPlaylist, text: str, at: float
    ) -> None:
        before = seen.last
        if seen.last.ended and text != seen.text:
            self.violations.append(f"{url}: changed after EXT-X-ENDLIST")
        for name, old, new in (
            ("MEDIA-SEQUENCE", before.media_sequence, playlist.media_sequence),
            (
                "DISCONTINUITY-SEQUENCE",
                before.discontinuity_sequence,
                playlist.discontinuity_sequence,
            ),
        ):
            if old is not None and new is not None and new < old:
                self.violations.append(f"{url}: EXT-X-{name} went back from {old} to {new}")
        newest = playlist.segments[-1].sequence if playlist.segments else None
        if newest is not None and (seen.newest is None or newest > seen.newest):
            waited = at - seen.newest_at
            self.longest_wait[url] = max(self.longest_wait.get(url, 0.0), waited)
            seen.newest, seen.newest_at, seen.reported_stall = newest, at, False
        elif (
            not playlist.ended
            and self.target_duration
            and not seen.reported_stall
            and at - seen.newest_at > 1.5 * self.target_duration + self.slack_seconds
        ):
            seen.reported_stall = True
            self.violations.append(
                f"{url}: no new segment for {at - seen.newest_at:.1f} s, more than 1.5 x"
                f" {self.target_duration} s"
            )
        seen.last, seen.text = playlist, text

    def _check_segment(self, url: str, seen: _Seen, segment: ListedSegment) -> None:
        before = seen.listed.setdefault(segment.sequence, segment)
        if before != segment:
            changes = ", ".join(
                f"{name} {getattr(before, name)!r} -> {getattr(segment, name)!r}"
                for name in ListedSegment.__slots__
                if getattr(before, name) != getattr(segment, name)
            )
            self.violations.append(f"{url}: segment {segment.sequence} changed: {changes}")
            seen.listed[segment.sequence] = segment  # report each change once
        if segment.gap:
            self.gaps_seen.add((url, segment.sequence))
            return
        for uri in (segment.uri, segment.map_uri):
            if uri is None:
                continue
            absolute = urljoin(url, uri)
            if absolute not in self._answered:
                self._answered.add(absolute)
                status = self.answers(absolute)
                if status != 200:
                    self.violations.append(f"{url}: listed {uri} answered {status}")
