"""What a player may rely on in the HLS we serve, checked per response and over time.

The rules are the MUSTs of draft-pantos-hls-rfc8216bis (§4 syntax, §8 versions, §6.2.1 and
§6.2.2 for the server, §6.2.4 across variants), the MUSTs of Apple's "HLS authoring
specification for Apple devices" that concern live playlists, and the playback rules of
DESIGN.md. Each has an id (`RULES`); a violation names it, the URL and the offending lines.

Pure code: HTTP responses come in as `Fetch` values (tests/hls_poller.py makes them from real
requests), violations collect in the checker. The rules read the raw lines, not what the m3u8
package makes of them: it forgives what players do not (a repeated or misplaced tag, a
missing DISCONTINUITY-SEQUENCE, which it reports as 0), and its strict mode refuses tags it
does not know, which RFC 8216bis 4 tells a client to ignore.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urljoin

__all__ = ["RULES", "Fetch", "HlsChecker", "Listing", "MediaView", "Violation"]

RULES: dict[str, str] = {
    "RFC 4.1": "UTF-8 without a byte order mark or control characters",
    "RFC 4.2": "attribute lists are NAME=value pairs, no name twice",
    "RFC 4.4.1.1": "the first line is #EXTM3U",
    "RFC 4.4.1.2": "at most one EXT-X-VERSION",
    "RFC 8": "EXT-X-VERSION is at least what the tags need (EXTINF decimals 3, EXT-X-MAP 6, ...)",
    "RFC 4.4.3": "a media playlist tag appears at most once",
    "RFC 4.4.3.1": "EXT-X-TARGETDURATION is present and a decimal-integer",
    "RFC 4.4.3.2": "EXT-X-MEDIA-SEQUENCE is a decimal-integer before the first segment",
    "RFC 4.4.3.3": "EXT-X-DISCONTINUITY-SEQUENCE is a decimal-integer before the first segment "
    "and every EXT-X-DISCONTINUITY",
    "RFC 4.4.3.5": "EXT-X-PLAYLIST-TYPE is EVENT or VOD",
    "RFC 4.4.4.1": "every segment has an EXTINF with a decimal duration",
    "RFC 4.4.4.5": "EXT-X-MAP has a quoted URI",
    "RFC 4.4.4.6": "EXT-X-PROGRAM-DATE-TIME is an ISO 8601 date-time with a time zone",
    "RFC 4.4.6": "a playlist is a media or a multivariant playlist, never both",
    "RFC 4.4.6.2": "every EXT-X-STREAM-INF has a BANDWIDTH and is followed by its URI",
    "RFC 6.2.1-M1": "every EXTINF, rounded to the nearest integer, is at most TARGETDURATION",
    "RFC 6.2.1-M6": "every listed segment (EXT-X-GAP excepted) and init section answers 200",
    "RFC 6.2.1-M10": "a segment keeps its URI, duration and discontinuity sequence number, and "
    "segments leave the playlist only from the front",
    "RFC 6.2.1-M11": "a VOD playlist never changes",
    "RFC 6.2.1-M13": "EXT-X-TARGETDURATION never changes",
    "RFC 6.2.1-M20": "nothing is added after EXT-X-ENDLIST and the tag stays",
    "RFC 6.2.1-M22": "a live playlist gets a new segment (or GAP) at least every 1.5 x target",
    "RFC 6.2.2-M3": "EXT-X-MEDIA-SEQUENCE never decreases",
    "RFC 6.2.2-M6": "a live playlist that removed segments still lists 3 x target of media",
    "RFC 6.2.2-M11": "EXT-X-DISCONTINUITY-SEQUENCE never decreases",
    "RFC 6.2.2-M12": "a playlist that removes segments has no EXT-X-PLAYLIST-TYPE",
    "RFC 6.2.4-M2c": "a segment has the same discontinuity sequence number in every variant",
    "RFC 6.2.4-M2d": "every variant has the same EXT-X-TARGETDURATION",
    "RFC 6.2.4-M2h": "EXT-X-PROGRAM-DATE-TIME in every variant or none, the same per segment",
    "APPLE 8.4": "EXT-X-PROGRAM-DATE-TIME in every live playlist",
    "APPLE 8.11": "a live playlist lists at least six segments once six exist",
    "APPLE 8.17": "EXT-X-DISCONTINUITY-SEQUENCE in every live playlist (a publisher can "
    "always reconnect, so a live stream can always get a discontinuity)",
    "APPLE 8.20": "EXT-X-MAP applies to every fMP4 segment",
    "APPLE 9.1": "every EXT-X-STREAM-INF has CODECS",
    "APPLE 9.2": "every video EXT-X-STREAM-INF has RESOLUTION",
    "APPLE 9.14": "every EXT-X-STREAM-INF has AVERAGE-BANDWIDTH",
    "APPLE 9.15": "every video EXT-X-STREAM-INF has FRAME-RATE",
    "APPLE 10.1": "playlists are delivered with gzip content-encoding",
    "NEBULA master-stable": "the master lists the same variants (URI, CODECS, RESOLUTION, "
    "FRAME-RATE) from its first fetch on",
    "NEBULA listed-playlist": "a media playlist the master lists always answers 200",
    "NEBULA cors": "every /hls response allows a page on another origin",
    "NEBULA live-fresh": "a playlist without EXT-X-ENDLIST is never cacheable for more than "
    "half a target duration (a player reloads that often when nothing changed)",
}

# RFC 8216bis 4.4.3: each of these appears at most once in a media playlist.
ONCE_TAGS = (
    "EXT-X-TARGETDURATION",
    "EXT-X-MEDIA-SEQUENCE",
    "EXT-X-DISCONTINUITY-SEQUENCE",
    "EXT-X-ENDLIST",
    "EXT-X-PLAYLIST-TYPE",
    "EXT-X-I-FRAMES-ONLY",
    "EXT-X-PART-INF",
    "EXT-X-SERVER-CONTROL",
)
MASTER_TAGS = (
    "EXT-X-STREAM-INF",
    "EXT-X-I-FRAME-STREAM-INF",
    "EXT-X-MEDIA",
    "EXT-X-SESSION-DATA",
    "EXT-X-SESSION-KEY",
    "EXT-X-CONTENT-STEERING",
)
MEDIA_TAGS = ONCE_TAGS + (
    "EXTINF",
    "EXT-X-BYTERANGE",
    "EXT-X-DISCONTINUITY",
    "EXT-X-MAP",
    "EXT-X-PROGRAM-DATE-TIME",
    "EXT-X-GAP",
    "EXT-X-PART",
    "EXT-X-PRELOAD-HINT",
    "EXT-X-SKIP",
)
VIDEO_CODECS = ("avc1", "avc3", "hvc1", "hev1", "dvh1", "dvhe", "av01", "vp09")
FMP4_SUFFIXES = (".m4s", ".mp4", ".cmfv", ".cmfa", ".m4v", ".m4a")
APPLE_MIN_LIVE_SEGMENTS = 6
PDT_TOLERANCE_SECONDS = 0.001  # the text has milliseconds
SAME_MOMENT_TARGETS = 1.0  # variant snapshots this close (in target durations) are compared
MAX_LINES = 4

_TAG = re.compile(r"^#(EXT[A-Z0-9-]*)(?::(.*))?$")
_INTEGER = re.compile(r"^\d{1,20}$")
_DECIMAL = re.compile(r"^\d+(?:\.\d+)?$")
_SIGNED_DECIMAL = re.compile(r"^-?\d+(?:\.\d+)?$")
_RESOLUTION = re.compile(r"^\d+x\d+$")
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE
)
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]+)')
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_AGE = re.compile(r"(?:^|[\s,])(?:s-maxage|max-age)\s*=\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Fetch:
    """One HTTP exchange as the checker needs it; times are time.monotonic() seconds.

    `status` 0 means no answer at all (`error` says why). `headers` have lower-case names.
    """

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent_at: float
    received_at: float
    request_headers: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Violation:
    url: str
    rule: str
    message: str
    lines: tuple[str, ...] = ()

    def __str__(self) -> str:
        shown = "".join(f"\n      {line}" for line in self.lines)
        return f"[{self.rule}] {self.url}\n    {self.message}{shown}"


@dataclass(frozen=True)
class Line:
    number: int
    text: str

    def __str__(self) -> str:
        return f"{self.number}: {self.text}"


@dataclass(frozen=True)
class Segment:
    msn: int
    uri: str
    duration: float | None
    discontinuity_sequence: int
    gap: bool
    program_date_time: datetime | None
    map_uri: str | None
    uri_line: Line
    extinf_line: Line | None


@dataclass(frozen=True)
class MediaView:
    """A media playlist as read from its raw lines."""

    target_duration: int | None
    target_line: Line | None
    media_sequence: int
    discontinuity_sequence: int
    has_discontinuity_sequence: bool
    playlist_type: str | None
    ended: bool
    segments: tuple[Segment, ...]
    text: str

    @property
    def last_msn(self) -> int:
        return self.media_sequence + len(self.segments) - 1

    @property
    def live(self) -> bool:
        """A sliding live playlist: no ENDLIST and no PLAYLIST-TYPE (EVENT only grows)."""
        return not self.ended and self.playlist_type is None

    def by_msn(self) -> dict[int, Segment]:
        return {s.msn: s for s in self.segments}


@dataclass(frozen=True)
class Variant:
    uri: str
    attributes: Mapping[str, str]
    line: Line

    @property
    def identity(self) -> tuple[str, ...]:
        """What a player decides on once, when it reads the master (BANDWIDTH may be refined)."""
        a = self.attributes
        return (self.uri, a.get("CODECS", ""), a.get("RESOLUTION", ""), a.get("FRAME-RATE", ""))


@dataclass(frozen=True)
class Listing:
    """What a checked playlist lists, as absolute URLs, for the caller to fetch."""

    kind: str  # "master", "media" or "none" (no playlist: an error answer)
    urls: tuple[str, ...] = ()


@dataclass
class _History:
    """What one media playlist URL showed before."""

    first: MediaView
    last: MediaView
    grew_at: float  # when the last segment (by MSN) was first seen
    stale_reported_for: int | None = None
    media_seen: dict[int, float] = field(default_factory=dict)  # MSN -> first seen, not GAP


@dataclass(frozen=True)
class _Snapshot:
    view: MediaView
    received_at: float


class _Report:
    """Violations of one response, before the checker files them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.found: list[Violation] = []

    def add(self, rule: str, message: str, *lines: Line | str | None) -> None:
        assert rule in RULES, rule
        shown = tuple(str(line) for line in lines if line is not None)[:MAX_LINES]
        self.found.append(Violation(self.url, rule, message, shown))


def _lines(text: str) -> list[Line]:
    return [Line(n, raw.rstrip("\r")) for n, raw in enumerate(text.split("\n"), start=1)]


def _tag(line: Line) -> tuple[str, str | None] | None:
    match = _TAG.match(line.text)
    return (match.group(1), match.group(2)) if match else None


def _is_uri(line: Line) -> bool:
    return bool(line.text.strip()) and not line.text.startswith("#")


def parse_attributes(value: str, line: Line, report: _Report) -> dict[str, str]:
    """An RFC 8216bis 4.2 attribute list, values as written (quoted strings with quotes)."""
    attributes: dict[str, str] = {}
    position = 0
    while position < len(value):
        match = _ATTRIBUTE.match(value, position)
        if match is None:
            report.add("RFC 4.2", f"malformed attribute list at column {position + 1}", line)
            return attributes
        name, raw = match.groups()
        if name in attributes:
            report.add("RFC 4.2", f"attribute {name} appears twice", line)
        attributes[name] = raw
        position = match.end()
        if position < len(value):
            if value[position] != ",":
                report.add("RFC 4.2", f"expected ',' at column {position + 1}", line)
                return attributes
            position += 1
    return attributes


def _unquoted(raw: str | None) -> str | None:
    """The text of a quoted-string, None for anything else."""
    if raw is None or len(raw) < 2 or not (raw.startswith('"') and raw.endswith('"')):
        return None
    return raw[1:-1]


def _decode(body: bytes, report: _Report) -> str | None:
    if body.startswith(b"\xef\xbb\xbf"):
        report.add("RFC 4.1", "the playlist starts with a byte order mark")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.add("RFC 4.1", f"not UTF-8: {exc}")
        return None
    for line in _lines(text):
        if _CONTROL.search(line.text):
            report.add("RFC 4.1", "a control character", line)
            break
    return text.lstrip("\ufeff")


def _rounded(duration: float) -> int:
    return int(Decimal(repr(duration)).to_integral_value(rounding=ROUND_HALF_UP))


def _date_time(value: str) -> datetime | None:
    if not _DATE_TIME.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def read_media(text: str, report: _Report) -> MediaView:
    """Read a media playlist line by line, filing the §4 and §8 syntax rules it breaks."""
    return _MediaReader(report).read(text)


@dataclass
class _Pending:
    """The tags read so far for the segment whose URI line comes next."""

    extinf: Line | None = None
    duration: float | None = None
    gap: bool = False
    program_date_time: datetime | None = None


class _MediaReader:
    """One pass over a media playlist's lines: a handler per tag, the state they share."""

    def __init__(self, report: _Report) -> None:
        self.report = report
        self.tag_lines: dict[str, list[Line]] = {}
        self.version: int | None = None
        self.version_line: Line | None = None
        self.needs: dict[int, Line] = {}  # protocol version -> a line needing it (§8)
        self.target: int | None = None
        self.target_line: Line | None = None
        self.media_sequence = 0
        self.dsn = 0
        self.has_dsn = False
        self.playlist_type: str | None = None
        self.ended = False
        self.i_frames_only = False
        self.map_uri: str | None = None
        self.discontinuities = 0
        self.pending = _Pending()
        self.segments: list[Segment] = []
        self.handlers = {
            "EXT-X-VERSION": self._version,
            "EXT-X-TARGETDURATION": self._target_duration,
            "EXT-X-MEDIA-SEQUENCE": self._media_sequence,
            "EXT-X-DISCONTINUITY-SEQUENCE": self._discontinuity_sequence,
            "EXT-X-PLAYLIST-TYPE": self._playlist_type,
            "EXT-X-ENDLIST": self._endlist,
            "EXT-X-I-FRAMES-ONLY": self._i_frames_only,
            "EXT-X-BYTERANGE": lambda _value, line: self.needs.setdefault(4, line),
            "EXT-X-DEFINE": lambda _value, line: self.needs.setdefault(8, line),
            "EXT-X-SKIP": lambda _value, line: self.needs.setdefault(9, line),
            "EXT-X-DISCONTINUITY": self._discontinuity,
            "EXT-X-GAP": self._gap,
            "EXTINF": self._extinf,
            "EXT-X-PROGRAM-DATE-TIME": self._program_date_time,
            "EXT-X-MAP": self._map,
        }

    def read(self, text: str) -> MediaView:
        lines = _lines(text)
        if lines[0].text != "#EXTM3U":
            self.report.add("RFC 4.4.1.1", "the first line is not #EXTM3U", lines[0])
        for line in lines[1:]:
            if _is_uri(line):
                self._segment(line)
            elif (parsed := _tag(line)) is not None:
                name, value = parsed
                self.tag_lines.setdefault(name, []).append(line)
                if name in MASTER_TAGS:
                    self.report.add("RFC 4.4.6", "a multivariant playlist tag", line)
                elif name in self.handlers:
                    self.handlers[name](value, line)
        self._finish()
        return MediaView(
            target_duration=self.target,
            target_line=self.target_line,
            media_sequence=self.media_sequence,
            discontinuity_sequence=self.dsn,
            has_discontinuity_sequence=self.has_dsn,
            playlist_type=self.playlist_type,
            ended=self.ended,
            segments=tuple(self.segments),
            text=text,
        )

    @property
    def started(self) -> bool:
        return bool(self.segments) or self.pending.extinf is not None

    def _segment(self, line: Line) -> None:
        pending = self.pending
        if pending.extinf is None:
            self.report.add("RFC 4.4.4.1", "a segment URI without an EXTINF", line)
        self.segments.append(
            Segment(
                msn=self.media_sequence + len(self.segments),
                uri=line.text.strip(),
                duration=pending.duration,
                discontinuity_sequence=self.dsn + self.discontinuities,
                gap=pending.gap,
                program_date_time=pending.program_date_time,
                map_uri=self.map_uri,
                uri_line=line,
                extinf_line=pending.extinf,
            )
        )
        self.pending = _Pending()

    def _version(self, value: str | None, line: Line) -> None:
        if value is not None and _INTEGER.match(value):
            self.version, self.version_line = int(value), line
        else:
            self.report.add("RFC 4.4.1.2", "EXT-X-VERSION is not a decimal-integer", line)

    def _target_duration(self, value: str | None, line: Line) -> None:
        if value is not None and _INTEGER.match(value):
            self.target, self.target_line = int(value), line
        else:
            self.report.add("RFC 4.4.3.1", "EXT-X-TARGETDURATION is not a decimal-integer", line)

    def _media_sequence(self, value: str | None, line: Line) -> None:
        if value is None or not _INTEGER.match(value):
            self.report.add("RFC 4.4.3.2", "EXT-X-MEDIA-SEQUENCE is not a decimal-integer", line)
        elif self.started:
            self.report.add("RFC 4.4.3.2", "EXT-X-MEDIA-SEQUENCE after the first segment", line)
        else:
            self.media_sequence = int(value)

    def _discontinuity_sequence(self, value: str | None, line: Line) -> None:
        if value is None or not _INTEGER.match(value):
            self.report.add("RFC 4.4.3.3", "not a decimal-integer", line)
        elif self.started or self.discontinuities:
            self.report.add("RFC 4.4.3.3", "after the first segment or a discontinuity", line)
        else:
            self.dsn, self.has_dsn = int(value), True

    def _playlist_type(self, value: str | None, line: Line) -> None:
        if value not in ("EVENT", "VOD"):
            self.report.add("RFC 4.4.3.5", f"playlist type {value!r}", line)
        self.playlist_type = value

    def _endlist(self, _value: str | None, _line: Line) -> None:
        self.ended = True

    def _i_frames_only(self, _value: str | None, line: Line) -> None:
        self.i_frames_only = True
        self.needs.setdefault(4, line)

    def _discontinuity(self, _value: str | None, _line: Line) -> None:
        self.discontinuities += 1

    def _gap(self, _value: str | None, _line: Line) -> None:
        self.pending.gap = True

    def _extinf(self, value: str | None, line: Line) -> None:
        self.pending.extinf = line
        duration = (value or "").split(",", 1)[0]
        if value is None or "," not in value or not _DECIMAL.match(duration):
            self.report.add("RFC 4.4.4.1", "EXTINF is not '<decimal duration>,[title]'", line)
            return
        self.pending.duration = float(duration)
        if "." in duration:
            self.needs.setdefault(3, line)

    def _program_date_time(self, value: str | None, line: Line) -> None:
        self.pending.program_date_time = _date_time(value or "")
        if self.pending.program_date_time is None:
            self.report.add("RFC 4.4.4.6", "not an ISO 8601 date-time with a time zone", line)

    def _map(self, value: str | None, line: Line) -> None:
        uri = _unquoted(parse_attributes(value or "", line, self.report).get("URI"))
        if uri:
            self.map_uri = uri
        else:
            self.report.add("RFC 4.4.4.5", "EXT-X-MAP without a quoted URI", line)
        self.needs.setdefault(5 if self.i_frames_only else 6, line)

    def _finish(self) -> None:
        for name in ONCE_TAGS:
            if len(found := self.tag_lines.get(name, [])) > 1:
                self.report.add("RFC 4.4.3", f"{name} appears {len(found)} times", *found)
        if len(found := self.tag_lines.get("EXT-X-VERSION", [])) > 1:
            self.report.add("RFC 4.4.1.2", "EXT-X-VERSION appears twice", *found)
        if "EXT-X-TARGETDURATION" not in self.tag_lines:
            self.report.add("RFC 4.4.3.1", "no EXT-X-TARGETDURATION")
        if self.needs and (self.version or 1) < (required := max(self.needs)):
            self.report.add(
                "RFC 8",
                f"EXT-X-VERSION {self.version or 'absent (1)'} but a tag needs {required}",
                self.version_line,
                self.needs[required],
            )


def check_media(view: MediaView, report: _Report) -> None:
    """The per-response rules of a media playlist beyond its syntax."""
    target = view.target_duration
    if target is not None:
        for segment in view.segments:
            if segment.duration is not None and _rounded(segment.duration) > target:
                report.add(
                    "RFC 6.2.1-M1",
                    f"EXTINF {segment.duration} rounds above the target duration {target}",
                    view.target_line,
                    segment.extinf_line,
                )
    for segment in view.segments:
        if segment.uri.endswith(FMP4_SUFFIXES) and segment.map_uri is None:
            report.add("APPLE 8.20", "an fMP4 segment without EXT-X-MAP", segment.uri_line)
            break
    if not view.live:
        return
    if not view.has_discontinuity_sequence:
        report.add("APPLE 8.17", "a live playlist without EXT-X-DISCONTINUITY-SEQUENCE")
    if view.segments and not any(s.program_date_time for s in view.segments):
        report.add("APPLE 8.4", "a live playlist without EXT-X-PROGRAM-DATE-TIME")
    existing = view.last_msn + 1
    if existing >= APPLE_MIN_LIVE_SEGMENTS and len(view.segments) < APPLE_MIN_LIVE_SEGMENTS:
        report.add(
            "APPLE 8.11",
            f"{len(view.segments)} segments listed although {existing} exist",
            view.segments[0].uri_line if view.segments else None,
        )
    listed = sum(s.duration or 0.0 for s in view.segments)
    if view.media_sequence > 0 and target is not None and listed < 3 * target:
        report.add(
            "RFC 6.2.2-M6",
            f"segments were removed but only {listed:.3f} s are listed (< 3 x {target})",
        )


def read_master(text: str, report: _Report) -> list[Variant]:
    """Read a multivariant playlist and file the rules its variants break."""
    lines = _lines(text)
    if lines[0].text != "#EXTM3U":
        report.add("RFC 4.4.1.1", "the first line is not #EXTM3U", lines[0])
    variants: list[Variant] = []
    mixed_reported = False
    for index, line in enumerate(lines):
        parsed = _tag(line)
        if parsed is None:
            continue
        name, value = parsed
        if name in MEDIA_TAGS and not mixed_reported:
            report.add("RFC 4.4.6", "a media playlist tag in a multivariant playlist", line)
            mixed_reported = True
        if name != "EXT-X-STREAM-INF":
            continue
        attributes = parse_attributes(value or "", line, report)
        following = next((n for n in lines[index + 1 :] if n.text.strip()), None)
        if following is None or not _is_uri(following):
            report.add("RFC 4.4.6.2", "EXT-X-STREAM-INF not followed by a URI", line, following)
            continue
        variants.append(Variant(following.text.strip(), attributes, line))
        _check_variant(attributes, line, report)
    return variants


def _check_variant(attributes: Mapping[str, str], line: Line, report: _Report) -> None:
    if not _INTEGER.match(attributes.get("BANDWIDTH", "")):
        report.add("RFC 4.4.6.2", "no decimal-integer BANDWIDTH", line)
    if "AVERAGE-BANDWIDTH" not in attributes:
        report.add("APPLE 9.14", "no AVERAGE-BANDWIDTH", line)
    elif not _INTEGER.match(attributes["AVERAGE-BANDWIDTH"]):
        report.add("RFC 4.2", "AVERAGE-BANDWIDTH is not a decimal-integer", line)
    codecs = _unquoted(attributes.get("CODECS"))
    if "CODECS" not in attributes:
        report.add("APPLE 9.1", "no CODECS", line)
    elif codecs is None:
        report.add("RFC 4.2", "CODECS is not a quoted-string", line)
    video = codecs is None or any(c.strip().startswith(VIDEO_CODECS) for c in codecs.split(","))
    if not video:
        return
    resolution = attributes.get("RESOLUTION")
    if resolution is None:
        report.add("APPLE 9.2", "a video variant without RESOLUTION", line)
    elif not _RESOLUTION.match(resolution):
        report.add("RFC 4.2", f"RESOLUTION {resolution!r} is not WIDTHxHEIGHT", line)
    frame_rate = attributes.get("FRAME-RATE")
    if frame_rate is None:
        report.add("APPLE 9.15", "a video variant without FRAME-RATE", line)
    elif not _SIGNED_DECIMAL.match(frame_rate):
        report.add("RFC 4.2", f"FRAME-RATE {frame_rate!r} is not a decimal", line)


def _is_master(text: str) -> bool:
    return any(line.startswith("#EXT-X-STREAM-INF") for line in text.split("\n"))


def _max_age(headers: Mapping[str, str]) -> int | None:
    """How long a cache may keep the response; None when Cache-Control does not say."""
    value = headers.get("cache-control", "")
    if re.search(r"no-cache|no-store", value, re.IGNORECASE):
        return 0
    ages = [int(age) for age in _MAX_AGE.findall(value)]
    return max(ages) if ages else None


class HlsChecker:
    """Collects violations over every response it is shown. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._violations: dict[tuple[str, str], Violation] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._media: dict[str, _History] = {}
        self._masters: dict[str, list[Variant]] = {}  # first variants seen, per master
        self._master_of: dict[str, str] = {}  # variant playlist URL -> its master
        self._latest: dict[str, _Snapshot] = {}

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations.values())

    def first_media_at(self, url: str, from_msn: int) -> float | None:
        """When `url` first listed media (a segment that is not a GAP) numbered `from_msn`
        or later; None if it has not yet."""
        with self._lock:
            history = self._media.get(url)
            seen = (
                [at for msn, at in history.media_seen.items() if msn >= from_msn] if history else []
            )
        return min(seen, default=None)

    def rule_counts(self) -> dict[str, int]:
        """How many responses broke each rule."""
        with self._lock:
            counts: dict[str, int] = {}
            for (_, rule), seen in self._counts.items():
                counts[rule] = counts.get(rule, 0) + seen
        return dict(sorted(counts.items()))

    def rules_broken(self) -> set[str]:
        return {v.rule for v in self.violations}

    def report(self) -> str:
        """Every rule broken, then each first violation (per playlist URL, or per folder of
        media objects) with how often it was seen."""
        with self._lock:
            items = sorted(self._violations.items(), key=lambda item: item[0][1])
            counts = dict(self._counts)
        rules = sorted({key[1] for key, _ in items})
        found = (f"{v}\n    (seen {counts[key]} times)" for key, v in items)
        return "\n".join([f"rules broken: {', '.join(rules)}", *found])

    def playlist(self, fetch: Fetch) -> Listing:
        """Check one playlist response; returns what it lists, for the caller to fetch."""
        report = _Report(fetch.url)
        with self._lock:
            listing = self._playlist(fetch, report)
            self._file(report)
        return listing

    def media_object(self, fetch: Fetch) -> None:
        """Check the answer to a segment or init section a playlist listed."""
        report = _Report(fetch.url)
        if fetch.status != 200:
            why = fetch.error or f"HTTP {fetch.status}"
            report.add("RFC 6.2.1-M6", f"a listed media object answers {why}")
        else:
            self._check_cors(fetch, report)
        with self._lock:
            self._file(report, fetch.url.rsplit("/", 1)[0] + "/*")

    def _file(self, report: _Report, where: str | None = None) -> None:
        """File violations once per place (`where`, else the URL) and rule, counting repeats."""
        for violation in report.found:
            key = (where or violation.url, violation.rule)
            self._violations.setdefault(key, violation)
            self._counts[key] = self._counts.get(key, 0) + 1

    def _playlist(self, fetch: Fetch, report: _Report) -> Listing:
        if fetch.status != 200:
            if fetch.url in self._master_of:
                why = fetch.error or f"HTTP {fetch.status}"
                master = self._master_of[fetch.url]
                report.add("NEBULA listed-playlist", f"listed in {master}, answers {why}")
            return Listing("none")
        self._check_cors(fetch, report)
        text = _decode(fetch.body, report)
        if text is None:
            return Listing("none")
        takes_gzip = "gzip" in fetch.request_headers.get("accept-encoding", "")
        if takes_gzip and "gzip" not in fetch.headers.get("content-encoding", ""):
            report.add("APPLE 10.1", "a playlist sent without gzip to a client that takes it")
        if _is_master(text):
            variants = read_master(text, report)
            self._master_over_time(fetch.url, variants, report)
            return Listing("master", tuple(urljoin(fetch.url, v.uri) for v in variants))
        view = read_media(text, report)
        check_media(view, report)
        self._check_freshness(fetch, view, report)
        self._media_over_time(fetch, view, report)
        self._latest[fetch.url] = _Snapshot(view, fetch.received_at)
        self._across_variants(fetch.url, report)
        listed = {s.map_uri for s in view.segments if s.map_uri} | {
            s.uri for s in view.segments if not s.gap
        }
        return Listing("media", tuple(sorted(urljoin(fetch.url, uri) for uri in listed)))

    def _check_cors(self, fetch: Fetch, report: _Report) -> None:
        origin = fetch.request_headers.get("origin")
        if origin is None:
            return
        allowed = fetch.headers.get("access-control-allow-origin")
        if allowed not in ("*", origin):
            report.add("NEBULA cors", f"Access-Control-Allow-Origin {allowed!r} for {origin}")

    def _check_freshness(self, fetch: Fetch, view: MediaView, report: _Report) -> None:
        if view.ended or view.target_duration is None:
            return
        age = _max_age(fetch.headers)
        if age is None and not {"expires", "last-modified"} & fetch.headers.keys():
            return  # nothing a cache could go by: it does not keep it
        if age is None or age > view.target_duration / 2:
            shown = fetch.headers.get("cache-control", "no Cache-Control")
            report.add("NEBULA live-fresh", f"a playlist without EXT-X-ENDLIST served '{shown}'")

    def _master_over_time(self, url: str, variants: list[Variant], report: _Report) -> None:
        for variant in variants:
            self._master_of[urljoin(url, variant.uri)] = url
        first = self._masters.setdefault(url, variants)
        if [v.identity for v in variants] != [v.identity for v in first]:
            report.add(
                "NEBULA master-stable",
                f"{len(first)} variants at first, now {len(variants)}",
                *(v.line for v in variants),
            )

    def _media_over_time(self, fetch: Fetch, view: MediaView, report: _Report) -> None:
        history = self._media.get(fetch.url)
        if history is None:
            history = self._media[fetch.url] = _History(view, view, fetch.received_at)
        for segment in view.segments:
            if not segment.gap:
                history.media_seen.setdefault(segment.msn, fetch.received_at)
        if history.last is view:
            return
        before = history.last
        if view.media_sequence < before.media_sequence:
            report.add(
                "RFC 6.2.2-M3",
                f"EXT-X-MEDIA-SEQUENCE went from {before.media_sequence} to {view.media_sequence}",
            )
        if view.discontinuity_sequence < before.discontinuity_sequence:
            report.add(
                "RFC 6.2.2-M11",
                f"EXT-X-DISCONTINUITY-SEQUENCE went from {before.discontinuity_sequence} to"
                f" {view.discontinuity_sequence}",
            )
        if view.target_duration != history.first.target_duration:
            report.add(
                "RFC 6.2.1-M13",
                f"EXT-X-TARGETDURATION was {history.first.target_duration}, now"
                f" {view.target_duration}",
                view.target_line,
            )
        self._same_segments(before, view, report)
        if before.ended:
            changed = _identities(view) != _identities(before) or not view.ended
            if changed:
                report.add("RFC 6.2.1-M20", "the playlist changed after EXT-X-ENDLIST")
        if before.playlist_type == "VOD" and view.text != before.text:
            report.add("RFC 6.2.1-M11", "a VOD playlist changed")
        if before.playlist_type and view.media_sequence > before.media_sequence:
            report.add(
                "RFC 6.2.2-M12",
                f"segments removed from a playlist of type {before.playlist_type}",
            )
        self._check_cadence(fetch, view, history, report)
        history.last = view

    def _same_segments(self, before: MediaView, now: MediaView, report: _Report) -> None:
        earlier = before.by_msn()
        for segment in now.segments:
            old = earlier.get(segment.msn)
            if old is None:
                continue
            same_duration = (
                old.duration is None
                or segment.duration is None
                or abs(old.duration - segment.duration) < 0.0005
            )
            if (
                old.uri != segment.uri
                or not same_duration
                or old.discontinuity_sequence != segment.discontinuity_sequence
            ):
                report.add(
                    "RFC 6.2.1-M10",
                    f"segment {segment.msn} was {old.uri} ({old.duration} s, discontinuity"
                    f" sequence {old.discontinuity_sequence}), now {segment.uri}"
                    f" ({segment.duration} s, {segment.discontinuity_sequence})",
                    segment.extinf_line,
                    segment.uri_line,
                )
                return
        if before.segments and now.segments and now.last_msn < before.last_msn:
            report.add(
                "RFC 6.2.1-M10",
                f"the last segment was {before.last_msn}, now {now.last_msn}",
                now.segments[-1].uri_line,
            )

    def _check_cadence(
        self, fetch: Fetch, view: MediaView, history: _History, report: _Report
    ) -> None:
        """RFC 6.2.1-M22, conservatively: the last segment counts as added when a response
        first showed it (received), and a response shows the playlist as of when it was sent."""
        before = history.last
        if not view.segments:
            return
        if not before.segments or view.last_msn > before.last_msn:
            history.grew_at = fetch.received_at
            history.stale_reported_for = None
            return
        if view.ended or view.target_duration is None:
            return
        unchanged = fetch.sent_at - history.grew_at
        if unchanged > 1.5 * view.target_duration and history.stale_reported_for != view.last_msn:
            history.stale_reported_for = view.last_msn
            report.add(
                "RFC 6.2.1-M22",
                f"no new segment after segment {view.last_msn} for {unchanged:.1f} s"
                f" (> 1.5 x {view.target_duration})",
                view.segments[-1].uri_line,
            )

    def _across_variants(self, url: str, report: _Report) -> None:
        master = self._master_of.get(url)
        if master is None:
            return
        mine = self._latest[url]
        window = SAME_MOMENT_TARGETS * (mine.view.target_duration or 1)
        others = [
            (other, snapshot)
            for other, owner in self._master_of.items()
            if owner == master and other != url
            for snapshot in [self._latest.get(other)]
            if snapshot is not None and abs(snapshot.received_at - mine.received_at) <= window
        ]
        for other, snapshot in others:
            _compare_variants(mine.view, other, snapshot.view, report)


def _compare_variants(mine: MediaView, other_url: str, other: MediaView, report: _Report) -> None:
    if mine.target_duration != other.target_duration:
        report.add(
            "RFC 6.2.4-M2d",
            f"EXT-X-TARGETDURATION {mine.target_duration} here, {other.target_duration} in"
            f" {other_url}",
            mine.target_line,
        )
    mine_pdt = any(s.program_date_time for s in mine.segments)
    other_pdt = any(s.program_date_time for s in other.segments)
    if mine.segments and other.segments and mine_pdt != other_pdt:
        report.add("RFC 6.2.4-M2h", f"EXT-X-PROGRAM-DATE-TIME here xor in {other_url}")
    theirs = other.by_msn()
    for segment in mine.segments:
        match = theirs.get(segment.msn)
        if match is None:
            continue
        if segment.discontinuity_sequence != match.discontinuity_sequence:
            report.add(
                "RFC 6.2.4-M2c",
                f"segment {segment.msn}: discontinuity sequence {segment.discontinuity_sequence}"
                f" here, {match.discontinuity_sequence} in {other_url}",
                segment.uri_line,
            )
            return
        if segment.program_date_time and match.program_date_time:
            apart = abs((segment.program_date_time - match.program_date_time).total_seconds())
            if apart > PDT_TOLERANCE_SECONDS:
                report.add(
                    "RFC 6.2.4-M2h",
                    f"segment {segment.msn}: date {segment.program_date_time.isoformat()} here,"
                    f" {match.program_date_time.isoformat()} in {other_url}",
                    segment.uri_line,
                )
                return


def _identities(view: MediaView) -> list[tuple[int, str, float | None]]:
    """What a segment is to a player; EXT-X-GAP may give way to the late media (issue 12)."""
    return [(s.msn, s.uri, s.duration) for s in view.segments]
