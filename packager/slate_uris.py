"""The slate's URIs: what a stream playlist lists for the time nobody published.

An outage on the stream URL (a gap row of the timeline, `packager.timeline`) is listed in
every variant as a slate segment (`media.hls.slate`: a flat grey picture and silence in the
rendition's format) rather than as EXT-X-GAP. Players treat GAP as media to route around
in another variant; an outage is in every variant at once, and at the live edge, where
Shaka Player gives up (error 1011) and AVPlayer stalls. A slate plays.

The URI says everything the bytes are made from, so any API process serves it without a
query and the bucket mirror holds the same object under the same path:
`slate/v640x360-a48000x2/init.mp4` and `slate/v640x360-a48000x2/00000042_2000.m4s`
(sequence number and duration in milliseconds). A slate segment starts at its sequence
number times its duration: gap rows last one target duration each, so a run of them is
continuous, and it follows an EXT-X-DISCONTINUITY on both sides.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from functools import lru_cache

from core.models import Rendition
from media.hls.slate import (
    MAX_HEIGHT,
    MAX_WIDTH,
    MIN_SIDE,
    SlateFormat,
    slate_init,
    slate_segment,
)

SLATE_DIR = "slate"
SLATE_INIT = "init.mp4"
# Silence in the rung encoders' format; a source's own rate matters not behind a discontinuity.
AUDIO_RATE, AUDIO_CHANNELS = 48_000, 2
FALLBACK_SIZE = (640, 360)  # a rendition whose size is not known yet
MAX_DURATION_MS = 60_000

_FORMAT = re.compile(r"(?:v(?P<w>\d{2,4})x(?P<h>\d{2,4}))?(?:-?a(?P<rate>\d{4,5})x(?P<ch>[12]))?")
_SEGMENT = re.compile(r"(?P<seq>\d{8})_(?P<ms>\d{1,5})\.m4s")


def slate_format(rendition: Rendition | None) -> SlateFormat:
    """A rendition's slate: its picture size (even, within the slate's bounds) and, when its
    CODECS has audio, stereo silence; a rendition not known yet gets a 640x360 one."""
    codecs = rendition.codecs if rendition is not None else "avc1,mp4a"
    width, height = FALLBACK_SIZE
    if rendition is not None and rendition.width and rendition.height:
        width = _even(rendition.width, MAX_WIDTH)
        height = _even(rendition.height, MAX_HEIGHT)
    video = any(codec in codecs for codec in ("avc1", "avc3", "hvc1", "hev1"))
    audio = "mp4a" in codecs or not video
    return SlateFormat(
        width=width if video else None,
        height=height if video else None,
        sample_rate=AUDIO_RATE if audio else None,
        channels=AUDIO_CHANNELS if audio else None,
    )


def slate_formats(renditions: Iterable[Rendition]) -> dict[uuid.UUID, SlateFormat]:
    """Each session's slate of one rendition, by session id."""
    return {rendition.session_id: slate_format(rendition) for rendition in renditions}


def _even(side: int, largest: int) -> int:
    return max(MIN_SIDE, min(largest, side - side % 2))


def format_token(fmt: SlateFormat) -> str:
    parts = []
    if fmt.width is not None and fmt.height is not None:
        parts.append(f"v{fmt.width}x{fmt.height}")
    if fmt.sample_rate is not None and fmt.channels is not None:
        parts.append(f"a{fmt.sample_rate}x{fmt.channels}")
    return "-".join(parts)


def init_uri(fmt: SlateFormat) -> str:
    return f"{SLATE_DIR}/{format_token(fmt)}/{SLATE_INIT}"


def segment_uri(fmt: SlateFormat, sequence: int, duration: float) -> str:
    return f"{SLATE_DIR}/{format_token(fmt)}/{sequence:08d}_{round(duration * 1000)}.m4s"


def parse_format(token: str) -> SlateFormat | None:
    """The format a URI's token names; None for anything that is not one."""
    match = _FORMAT.fullmatch(token)
    if match is None or not token or token.startswith("-"):
        return None
    width, height = match["w"], match["h"]
    rate, channels = match["rate"], match["ch"]
    try:  # the slate's own bounds (sizes, rates) are checked as the format is made
        return SlateFormat(
            width=int(width) if width else None,
            height=int(height) if height else None,
            sample_rate=int(rate) if rate else None,
            channels=int(channels) if channels else None,
        )
    except ValueError:
        return None


@lru_cache(maxsize=256)
def render(token: str, name: str) -> bytes | None:
    """The bytes of `slate/{token}/{name}`; None when the path names no slate (a bad format,
    size, duration or name: the slate's own checks included). Kept: an outage's players all
    ask for the same few."""
    fmt = parse_format(token)
    if fmt is None:
        return None
    try:
        if name == SLATE_INIT:
            return slate_init(fmt)
        match = _SEGMENT.fullmatch(name)
        if match is None or not 0 < int(match["ms"]) <= MAX_DURATION_MS:
            return None
        duration = int(match["ms"]) / 1000
        sequence = int(match["seq"])
        return slate_segment(
            fmt, sequence=sequence, start_seconds=sequence * duration, duration_seconds=duration
        )
    except ValueError:
        return None
