"""BANDWIDTH and AVERAGE-BANDWIDTH of a variant, by RFC 8216bis's definitions (4.4.6.2).

BANDWIDTH is the peak segment bit rate: the largest bit rate of any run of contiguous
segments lasting 0.5 to 1.5 target durations, so neither a short flush segment holding
little more than an IDR frame, nor one segment of any length, sets it alone. AVERAGE-BANDWIDTH
is the bit rate over all of the media. Before any media exists, a variant advertises a seed
from its encoder settings (or what the publisher announced) plus the fMP4 overhead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# moof/traf/trun and mdat headers on top of the elementary streams: about 1 % for a 2 s
# segment at 800 kbit/s, more at lower rates; 5 % leaves room without inflating much.
CONTAINER_OVERHEAD = 1.05
RUN_MIN, RUN_MAX = 0.5, 1.5  # run durations that count, in target durations


@dataclass(frozen=True, slots=True)
class SizedSegment:
    sequence: int
    size_bytes: int
    duration: float


def peak_segment_bit_rate(segments: Iterable[SizedSegment], target_duration: int) -> int | None:
    """The largest bit rate of a run of consecutive sequence numbers among `segments` whose
    total duration is 0.5 to 1.5 x the target duration; None when no run qualifies.

    The target duration covers every segment (RFC 8216bis 4.4.3.1), so a segment longer than
    the one given raises it: a long-GOP segment still counts on its own.
    """
    ordered: Sequence[SizedSegment] = sorted(segments, key=lambda s: s.sequence)
    if not ordered:
        return None
    longest = max(s.duration for s in ordered)
    target = max(target_duration, math.floor(longest + 0.5))
    low, high = RUN_MIN * target, RUN_MAX * target
    best: int | None = None
    for start, first in enumerate(ordered):
        bits, seconds, previous = 0, 0.0, first.sequence - 1
        for segment in ordered[start:]:
            seconds += segment.duration
            if segment.sequence != previous + 1 or seconds > high:
                break
            bits += segment.size_bytes * 8
            previous = segment.sequence
            if seconds >= low:
                rate = round(bits / seconds)
                best = rate if best is None else max(best, rate)
    return best


def seeded_bit_rate(video_bit_rate: int, audio_bit_rate: int) -> int:
    """What a variant is expected to need before it is measured: its streams plus overhead."""
    return round((video_bit_rate + audio_bit_rate) * CONTAINER_OVERHEAD)
