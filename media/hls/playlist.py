"""HLS playlists as plain data, rendered to m3u8 text by pure functions (RFC 8216).

Nothing here does I/O or knows about storage: the caller turns database rows into
`SegmentEntry` values, picks a window with `live_window()` (or passes the whole list for a
recording) and writes the text wherever it goes.

Low-Latency HLS (draft-pantos-hls-rfc8216bis) lives inside the same structure: a segment can
carry its `PartEntry` list, the playlist can carry the parts of the segment still being
written, a PART-TARGET, a SERVER-CONTROL line and a preload hint. Without those fields the
output is plain RFC 8216.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from media.hls.target_duration import fitting_target_duration

__all__ = [
    "CLOSED_CAPTIONS_NONE",
    "LiveWindow",
    "MediaPlaylist",
    "PartEntry",
    "PreloadHint",
    "SegmentEntry",
    "ServerControl",
    "Variant",
    "format_program_date_time",
    "live_window",
    "render_master_playlist",
    "render_media_playlist",
]

PLAYLIST_TYPES = ("VOD", "EVENT")
DEFAULT_VERSION = 7  # fMP4 (EXT-X-MAP without I-FRAMES-ONLY) needs 6; we declare 7
CLOSED_CAPTIONS_NONE = "NONE"

# RFC 8216 4.1: no control characters in a playlist at all; 4.2: a quoted-string holds
# neither a double quote nor CR/LF. Both together give one "cannot be encoded" test.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_QUOTABLE = re.compile(r'["\x00-\x1f\x7f-\x9f]')


@dataclass(frozen=True, slots=True)
class PartEntry:
    """An LL-HLS partial segment (EXT-X-PART)."""

    uri: str
    duration: float
    independent: bool = False
    gap: bool = False


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One media segment line group: tags, EXTINF and URI.

    `map_uri` overrides the playlist's init section from this segment on (a reconnecting
    publisher may bring a new init segment); None keeps the one in force.
    """

    sequence: int
    uri: str
    duration: float
    program_date_time: datetime | None = None
    discontinuity: bool = False
    gap: bool = False
    title: str = ""
    parts: tuple[PartEntry, ...] = ()
    map_uri: str | None = None


@dataclass(frozen=True, slots=True)
class ServerControl:
    """EXT-X-SERVER-CONTROL (LL-HLS); durations in seconds."""

    can_block_reload: bool = False
    part_hold_back: float | None = None
    hold_back: float | None = None
    can_skip_until: float | None = None


@dataclass(frozen=True, slots=True)
class PreloadHint:
    """EXT-X-PRELOAD-HINT: the next part the server is about to produce."""

    uri: str
    type: str = "PART"  # or "MAP"


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A media playlist.

    `target_duration` is the presentation's EXT-X-TARGETDURATION, rendered as given: a live
    playlist must keep one value for its whole life (RFC 8216bis 6.2.1), so the caller fixes
    it once (`media.hls.target_duration`) instead of deriving it from whatever the window
    holds. A segment longer than it is still listed with its true EXTINF. None means "the
    smallest that fits every listed segment", for a playlist whose segments are all known.
    `media_sequence` defaults to the first listed segment's sequence;
    `discontinuity_sequence` counts the EXT-X-DISCONTINUITY tags that left the window
    (`live_window()` computes both). EXT-X-DISCONTINUITY-SEQUENCE is written in every
    playlist but a VOD one, 0 included (Apple's authoring spec 8.17: a player switching
    variants needs it whenever a live playlist can ever hold a discontinuity).
    """

    segments: Sequence[SegmentEntry]
    target_duration: int | None = None
    map_uri: str | None = None
    ended: bool = False
    playlist_type: str | None = None
    independent_segments: bool = True
    version: int = DEFAULT_VERSION
    media_sequence: int | None = None
    discontinuity_sequence: int = 0
    # LL-HLS, all optional
    part_target: float | None = None
    server_control: ServerControl | None = None
    pending_parts: tuple[PartEntry, ...] = ()  # parts of the segment still being written
    preload_hint: PreloadHint | None = None


@dataclass(frozen=True, slots=True)
class LiveWindow:
    """The slice of a live playlist plus the counters RFC 8216 6.2.2 asks for."""

    segments: tuple[SegmentEntry, ...]
    media_sequence: int
    discontinuity_sequence: int


@dataclass(frozen=True, slots=True)
class Variant:
    """One EXT-X-STREAM-INF entry of a master playlist; bandwidths in bits per second.

    `closed_captions` is `NONE` (the variant has none: Apple 4.4 wants it said), the GROUP-ID
    of an EXT-X-MEDIA caption rendition, or None to leave the attribute out. `name` is not an
    RFC attribute; players ignore it, and hls.js shows it as the level's name.
    """

    uri: str
    bandwidth: int
    codecs: str
    average_bandwidth: int | None = None
    resolution: tuple[int, int] | None = None
    frame_rate: float | None = None
    closed_captions: str | None = None
    name: str | None = None


def live_window(segments: Sequence[SegmentEntry], size: int) -> LiveWindow:
    """Keep the last `size` segments of a session, in order.

    EXT-X-MEDIA-SEQUENCE is the first kept segment's sequence; EXT-X-DISCONTINUITY-SEQUENCE
    is the number of discontinuity-flagged segments that slid out, so every segment keeps
    its discontinuity sequence number across reloads. A caller that only loads the tail
    from the database can build `MediaPlaylist` directly with a counted
    `discontinuity_sequence` instead.
    """
    if size <= 0:
        raise ValueError(f"window size must be positive, got {size}")
    kept = tuple(segments[-size:])
    dropped = len(segments) - len(kept)
    slid_out = sum(1 for s in segments[:dropped] if s.discontinuity)
    media_sequence = kept[0].sequence if kept else 0
    return LiveWindow(kept, media_sequence, slid_out)


def format_program_date_time(value: datetime) -> str:
    """ISO 8601 with milliseconds and a zone (`Z` for UTC), as EXT-X-PROGRAM-DATE-TIME wants.

    Microseconds are truncated, not rounded, so the text never runs ahead of the clock.
    """
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"program date time {value!r} has no time zone; use an aware datetime")
    text = value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}"
    if offset == timedelta(0):
        return text + "Z"
    sign = "+" if offset > timedelta(0) else "-"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def render_media_playlist(pl: MediaPlaylist) -> str:
    """Render a media playlist; raises ValueError for values that cannot be encoded."""
    if pl.playlist_type is not None and pl.playlist_type not in PLAYLIST_TYPES:
        raise ValueError(f"playlist_type must be one of {PLAYLIST_TYPES}, got {pl.playlist_type!r}")
    if pl.playlist_type == "VOD" and not pl.ended:
        raise ValueError("a VOD playlist is complete by definition: set ended=True")
    if pl.version < 1:
        raise ValueError(f"version must be positive, got {pl.version}")
    if pl.discontinuity_sequence < 0:
        raise ValueError(f"discontinuity_sequence must be >= 0, got {pl.discontinuity_sequence}")
    segments = pl.segments
    for previous, current in zip(segments, segments[1:], strict=False):
        if current.sequence != previous.sequence + 1:
            raise ValueError(
                f"segment sequences must be consecutive: {previous.sequence} then"
                f" {current.sequence}"
            )

    extinfs = [_decimal(s.duration, "segment duration") for s in segments]
    media_sequence = pl.media_sequence
    if media_sequence is None:
        media_sequence = segments[0].sequence if segments else 0
    elif segments and segments[0].sequence != media_sequence:
        raise ValueError(
            f"media_sequence {media_sequence} differs from the first segment's"
            f" sequence {segments[0].sequence}"
        )

    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{pl.version}",
        f"#EXT-X-TARGETDURATION:{_target_duration(pl.target_duration, segments)}",
    ]
    if pl.server_control is not None:
        lines.append(_server_control_line(pl.server_control))
    if pl.part_target is not None:
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={_decimal(pl.part_target, 'part target')}")
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}")
    if pl.playlist_type != "VOD" or pl.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{pl.discontinuity_sequence}")
    if pl.playlist_type is not None:
        lines.append(f"#EXT-X-PLAYLIST-TYPE:{pl.playlist_type}")
    if pl.independent_segments:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")

    in_force = pl.map_uri  # EXT-X-MAP applies until the next one (RFC 8216 4.3.2.5)
    rendered_map = None
    if in_force is not None and not segments:
        lines.append(f"#EXT-X-MAP:URI={_quoted(in_force, 'map URI')}")
        rendered_map = in_force
    for segment, extinf in zip(segments, extinfs, strict=True):
        if segment.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if segment.map_uri is not None:
            in_force = segment.map_uri
        if in_force is not None and in_force != rendered_map:
            lines.append(f"#EXT-X-MAP:URI={_quoted(in_force, 'map URI')}")
            rendered_map = in_force
        if segment.program_date_time is not None:
            pdt = format_program_date_time(segment.program_date_time)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt}")
        if segment.gap:
            lines.append("#EXT-X-GAP")
        lines.extend(_part_line(part) for part in segment.parts)
        if _CONTROL.search(segment.title):
            raise ValueError(f"segment title {segment.title!r} contains a control character")
        lines.append(f"#EXTINF:{extinf},{segment.title}")
        lines.append(_uri_line(segment.uri))

    lines.extend(_part_line(part) for part in pl.pending_parts)
    if pl.preload_hint is not None:
        hint = pl.preload_hint
        if hint.type not in ("PART", "MAP"):
            raise ValueError(f"preload hint type must be PART or MAP, got {hint.type!r}")
        lines.append(f"#EXT-X-PRELOAD-HINT:TYPE={hint.type},URI={_quoted(hint.uri, 'hint URI')}")
    if pl.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_master_playlist(variants: Sequence[Variant], independent_segments: bool = True) -> str:
    """Render a master playlist listing `variants` in the given order."""
    if not variants:
        raise ValueError("a master playlist needs at least one variant")
    lines = ["#EXTM3U"]
    if independent_segments:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for variant in variants:
        lines.append("#EXT-X-STREAM-INF:" + ",".join(_stream_inf_attributes(variant)))
        lines.append(_uri_line(variant.uri))
    return "\n".join(lines) + "\n"


# internals


def _stream_inf_attributes(v: Variant) -> list[str]:
    attrs = [f"BANDWIDTH={_positive_int(v.bandwidth, 'bandwidth')}"]
    if v.average_bandwidth is not None:
        attrs.append(f"AVERAGE-BANDWIDTH={_positive_int(v.average_bandwidth, 'average bandwidth')}")
    attrs.append(f"CODECS={_quoted(v.codecs, 'codecs')}")
    if v.resolution is not None:
        width = _positive_int(v.resolution[0], "width")
        height = _positive_int(v.resolution[1], "height")
        attrs.append(f"RESOLUTION={width}x{height}")
    if v.frame_rate is not None:
        if not (math.isfinite(v.frame_rate) and v.frame_rate > 0):
            raise ValueError(f"frame rate must be a positive number, got {v.frame_rate!r}")
        attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
    if v.closed_captions == CLOSED_CAPTIONS_NONE:  # an enumerated string, never quoted
        attrs.append(f"CLOSED-CAPTIONS={CLOSED_CAPTIONS_NONE}")
    elif v.closed_captions is not None:
        attrs.append(f"CLOSED-CAPTIONS={_quoted(v.closed_captions, 'closed captions group')}")
    if v.name is not None:
        attrs.append(f"NAME={_quoted(v.name, 'name')}")
    return attrs


def _target_duration(fixed: int | None, segments: Sequence[SegmentEntry]) -> int:
    if fixed is not None:
        if fixed <= 0:
            raise ValueError(f"target_duration must be positive, got {fixed}")
        return fixed
    if not segments:
        raise ValueError("an empty playlist needs a target_duration")
    return fitting_target_duration(s.duration for s in segments)


def _decimal(value: float, what: str) -> str:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return f"{value:.3f}"


def _positive_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _quoted(value: str, what: str) -> str:
    if not value or _NOT_QUOTABLE.search(value):
        raise ValueError(
            f"{what} {value!r} cannot be a quoted-string (empty, double quote or control character)"
        )
    return f'"{value}"'


def _uri_line(uri: str) -> str:
    """A URI on its own line: not empty, no control characters, not mistakable for a tag."""
    if not uri or uri != uri.strip() or uri.startswith("#") or _CONTROL.search(uri):
        raise ValueError(f"URI {uri!r} cannot stand on a playlist line")
    return uri


def _part_line(part: PartEntry) -> str:
    attrs = [
        f"DURATION={_decimal(part.duration, 'part duration')}",
        f"URI={_quoted(part.uri, 'part URI')}",
    ]
    if part.independent:
        attrs.append("INDEPENDENT=YES")
    if part.gap:
        attrs.append("GAP=YES")
    return "#EXT-X-PART:" + ",".join(attrs)


def _server_control_line(sc: ServerControl) -> str:
    attrs = []
    if sc.can_skip_until is not None:
        attrs.append(f"CAN-SKIP-UNTIL={_decimal(sc.can_skip_until, 'can skip until')}")
    if sc.hold_back is not None:
        attrs.append(f"HOLD-BACK={_decimal(sc.hold_back, 'hold back')}")
    if sc.part_hold_back is not None:
        attrs.append(f"PART-HOLD-BACK={_decimal(sc.part_hold_back, 'part hold back')}")
    if sc.can_block_reload:
        attrs.append("CAN-BLOCK-RELOAD=YES")
    if not attrs:
        raise ValueError("server control with no attribute set")
    return "#EXT-X-SERVER-CONTROL:" + ",".join(attrs)
