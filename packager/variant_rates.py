"""A variant's BANDWIDTH and AVERAGE-BANDWIDTH, kept in its rendition row as segments land.

Each new segment costs one indexed read of its neighbours (the only segments a run through
it can reach) and updates running totals, so neither recording a segment nor rendering a
master ever sums a whole session. Values start from the seed the ladder plan wrote:
BANDWIDTH only rises, and only by a run of 0.5-1.5 target durations
(`media.hls.bandwidth`); AVERAGE-BANDWIDTH is the measured average once there is media.
"""

from __future__ import annotations

import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Rendition, Segment, SegmentStatus
from media.hls.bandwidth import SizedSegment, peak_segment_bit_rate

# How many segments either side of a new one a qualifying run can reach: runs last at most
# 1.5 target durations, and only the segment before a discontinuity or the last one is
# shorter than the target.
RUN_REACH = 8


def record_segment_rate(
    db: Session,
    rendition: Rendition,
    sequence: int,
    *,
    added_bytes: int,
    added_seconds: float,
    target_seconds: float,
) -> None:
    """Count a segment just written as ready (or rewritten: the caller passes the change in
    bytes and seconds). The caller holds the rendition row's lock, so runs that span
    segments of concurrent writers are seen by whichever commits second."""
    neighbours = db.execute(
        select(Segment.sequence, Segment.size_bytes, Segment.duration).where(
            Segment.rendition_id == rendition.id,
            Segment.sequence.between(sequence - RUN_REACH, sequence + RUN_REACH),
            Segment.status == SegmentStatus.READY,
        )
    ).all()
    peak = peak_segment_bit_rate(
        [SizedSegment(*row) for row in neighbours], max(1, math.ceil(target_seconds))
    )
    rendition.media_bytes = (rendition.media_bytes or 0) + added_bytes
    rendition.media_seconds = (rendition.media_seconds or 0.0) + added_seconds
    if rendition.media_seconds <= 0:
        return
    average = round(rendition.media_bytes * 8 / rendition.media_seconds)
    # Nothing seeded and no run long enough yet (a first segment shorter than half the
    # target): the average is all there is to advertise.
    rendition.bandwidth = max(rendition.bandwidth or 0, peak or 0) or average
    rendition.average_bandwidth = min(average, rendition.bandwidth)
