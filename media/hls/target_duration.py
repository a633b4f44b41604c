"""EXT-X-TARGETDURATION: one value per presentation, fixed once, and the segment length it allows.

RFC 8216bis 4.4.3.1: every EXTINF, rounded to the nearest integer, must be at most the
target duration, and 6.2.1 forbids changing the target duration of a live playlist. So the
value cannot follow the segments in a window (it would go up while a long segment is listed
and down once it leaves); it is chosen once, when the presentation's first segment closes,
as the configured target rounded up or that segment rounded, whichever is larger. A first
segment longer than the target means the encoder's keyframes are that far apart, and later
segments will be as long. The segmenter then keeps every later segment within it where the
keyframes allow (`max_segment_ticks`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from media.types import CLOCK_HZ

__all__ = [
    "extinf_text",
    "fitting_target_duration",
    "max_segment_ticks",
    "presentation_target_duration",
    "rounded_extinf",
]

# The longest EXTINF that still rounds down to the target duration, in thousandths.
_ROUNDS_DOWN_MILLIS = 499


def extinf_text(seconds: float) -> str:
    """A duration as EXTINF writes it: three decimals."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"segment duration must be a finite number >= 0, got {seconds!r}")
    return f"{seconds:.3f}"


def rounded_extinf(seconds: float) -> int:
    """The EXTINF as written, rounded half up: what RFC 8216bis compares to the target."""
    return int(Decimal(extinf_text(seconds)).to_integral_value(rounding=ROUND_HALF_UP))


def fitting_target_duration(durations: Iterable[float], floor: int = 1) -> int:
    """The smallest target duration every one of `durations` fits, and at least `floor`."""
    return max([floor, *(rounded_extinf(d) for d in durations)])


def presentation_target_duration(target_seconds: float, first_segment_seconds: float) -> int:
    """The target duration of a presentation, fixed when its first segment closes."""
    return fitting_target_duration([first_segment_seconds], max(1, math.ceil(target_seconds)))


def max_segment_ticks(target_duration: int) -> int:
    """The longest segment (90 kHz ticks) whose EXTINF rounds to at most `target_duration`."""
    if target_duration <= 0:
        raise ValueError(f"target_duration must be positive, got {target_duration}")
    return target_duration * CLOCK_HZ + CLOCK_HZ * _ROUNDS_DOWN_MILLIS // 1000
