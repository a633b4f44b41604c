#!/usr/bin/env python3
"""Slate generation cost: milliseconds of CPU per 2 s slate segment (grey video, silent
stereo 48 kHz AAC), the work the API does when a player asks for one.

    python bench/slate.py [--segments 50]

Printed per size: best of three runs of the mean over --segments consecutive segments, and
the segment's size in bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.hls.slate import SlateFormat, slate_init, slate_segment  # noqa: E402

SIZES = ((640, 360), (1280, 720), (1920, 1080))
SEGMENT_SECONDS = 2.0
RUNS = 3


def mean_ms_per_segment(fmt: SlateFormat, segments: int) -> float:
    started = time.perf_counter()
    for index in range(segments):
        slate_segment(
            fmt,
            sequence=index + 1,
            start_seconds=index * SEGMENT_SECONDS,
            duration_seconds=SEGMENT_SECONDS,
        )
    return (time.perf_counter() - started) * 1000 / segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=50)
    segments = parser.parse_args().segments
    for width, height in SIZES:
        fmt = SlateFormat(width, height, 48000, 2)
        slate_init(fmt)
        best = min(mean_ms_per_segment(fmt, segments) for _ in range(RUNS))
        size = len(slate_segment(fmt, sequence=1, start_seconds=0, duration_seconds=2))
        print(f"{width}x{height}: {best:.2f} ms per {SEGMENT_SECONDS:g} s segment, {size} bytes")


if __name__ == "__main__":
    main()
