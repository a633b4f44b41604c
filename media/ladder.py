"""The adaptive-bitrate ladder: which rungs a stream gets, and how big each one is.

A stream stores its own ladder as JSON (`[{"name": "720p", "height": 720, "bitrate": 3000000}]`,
null for the default); `parse_ladder` is the one validator for that form, used by the API when
a ladder is set and by the workers when they read it back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from media.codecs.h264 import HIGH_PROFILE, high_profile_level

SOURCE = "source"  # the rendition the publisher sent, as opposed to a rung
NAME_PATTERN = re.compile(r"^[a-z0-9]{1,32}$")  # also a URL path segment under /hls/{stream}/
MAX_RUNGS = 8
MIN_HEIGHT, MAX_HEIGHT = 64, 4320
MIN_BITRATE, MAX_BITRATE = 50_000, 50_000_000
# VBV as in the reference ffmpeg ladder: peak 10 % over the target, two seconds of buffer.
MAXRATE_FACTOR = 1.1
BUFSIZE_FACTOR = 2.0
# A rung's H.264 level allows this frame rate (or the source's, when faster), so the level,
# and with it the CODECS a master advertises, does not hang on the source's exact rate.
LEVEL_FRAME_RATE = 60.0
_KEYS = frozenset({"name", "height", "bitrate"})


@dataclass(frozen=True, slots=True)
class Rung:
    """One rendition of the ladder; `width` is 0 until fitted to a source's aspect ratio.

    Rungs are H.264 High profile at the level their size, `level_frame_rate` and VBV need,
    and the encoder is pinned to both, so `video_codec` is known before anything is encoded.
    """

    name: str
    height: int
    video_bitrate: int
    width: int = 0
    level_frame_rate: float = LEVEL_FRAME_RATE

    @property
    def max_bitrate(self) -> int:
        return round(self.video_bitrate * MAXRATE_FACTOR)

    @property
    def buffer_size(self) -> int:
        return round(self.video_bitrate * BUFSIZE_FACTOR)

    @property
    def h264_level(self) -> int:
        """level_idc (31 for level 3.1); ValueError before the rung is fitted to a source."""
        if not self.width:
            raise ValueError(f"rung {self.name!r} has no width yet: fit it to a source first")
        return high_profile_level(
            self.width, self.height, self.level_frame_rate, self.max_bitrate, self.buffer_size
        )

    @property
    def video_codec(self) -> str:
        """RFC 6381 `avc1.PPCCLL`: x264 sets no constraint flag in a High profile SPS."""
        return f"avc1.{HIGH_PROFILE:02x}00{self.h264_level:02x}"


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("720p", 720, 3_000_000),
    Rung("480p", 480, 1_400_000),
    Rung("360p", 360, 800_000),
)


def even_width(source_width: int, source_height: int, height: int) -> int:
    """The width keeping the source's aspect ratio at `height`, to the nearest even number
    (ties up, as the ffmpeg CLI's `scale=-2:height` rounds)."""
    if source_width <= 0 or source_height <= 0:
        raise ValueError(f"source size must be positive, got {source_width}x{source_height}")
    return max(2, 2 * ((source_width * height + source_height) // (2 * source_height)))


def rungs_for_source(
    ladder: Sequence[Rung],
    source_width: int,
    source_height: int,
    source_frame_rate: float | None = None,
) -> list[Rung]:
    """The rungs a source gets, tallest first: only those below its height. A rung as tall
    as the source would cost a transcode and give nothing the source does not; one taller
    would be an upscale."""
    level_frame_rate = max(LEVEL_FRAME_RATE, source_frame_rate or 0.0)
    fitted = [
        replace(
            rung,
            width=even_width(source_width, source_height, rung.height),
            level_frame_rate=level_frame_rate,
        )
        for rung in ladder
        if rung.height < source_height
    ]
    return sorted(fitted, key=lambda rung: -rung.height)


def parse_ladder(data: Any) -> list[Rung]:
    """Validate a ladder in its JSON form; ValueError names the rung and field at fault."""
    if not isinstance(data, list) or len(data) > MAX_RUNGS:
        raise ValueError(
            f"ladder must be a list of at most {MAX_RUNGS} rungs ([]: the source only), "
            f"got {data!r}"
        )
    rungs: list[Rung] = []
    for index, item in enumerate(data):
        where = f"ladder[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object with {sorted(_KEYS)}, got {item!r}")
        if set(item) != _KEYS:
            raise ValueError(
                f"{where} must have exactly the keys {sorted(_KEYS)}, got {sorted(item)}"
            )
        name, height, bitrate = item["name"], item["height"], item["bitrate"]
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name == SOURCE:
            raise ValueError(
                f"{where}.name must be 1-32 lowercase letters or digits and not {SOURCE!r},"
                f" got {name!r}"
            )
        if not _int_in(height, MIN_HEIGHT, MAX_HEIGHT) or height % 2:
            raise ValueError(
                f"{where}.height must be an even integer {MIN_HEIGHT}..{MAX_HEIGHT}, got {height!r}"
            )
        if not _int_in(bitrate, MIN_BITRATE, MAX_BITRATE):
            raise ValueError(
                f"{where}.bitrate must be an integer {MIN_BITRATE}..{MAX_BITRATE} bits per"
                f" second, got {bitrate!r}"
            )
        if any(rung.name == name for rung in rungs):
            raise ValueError(f"{where}.name {name!r} is used by an earlier rung")
        rungs.append(Rung(name, height, bitrate))
    return rungs


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
