"""Ladder throughput: our PyAV transcode vs the ffmpeg CLI ladder on the same 1080p30 source.

    /tmp/venv/bin/python bench/ladder_throughput.py [--seconds 60] [--workers N]

Ours runs the worker's transcode function over the source segments that ingest would have
stored (same FLV → segmenter → fMP4 path), one process per core as the workers run, with
the segments in memory: it measures the transcode, not S3 or Postgres. The reference is
`/work/shared/bench/ffmpeg_ladder.sh` (decode once, 3 x264 veryfast rungs, audio copied).
Prints real-time factors (media seconds per wall second) and their ratio, plus the load
average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.hls.segment_packager import PackagedSegment  # noqa: E402
from media.ladder import DEFAULT_LADDER, rungs_for_source  # noqa: E402
from packager.transcoding.transcode import EncoderOptions, transcode_segment  # noqa: E402
from tests.media import make_source, package_flv  # noqa: E402

FFMPEG_LADDER = Path("/work/shared/bench/ffmpeg_ladder.sh")


def _ladder(segment: PackagedSegment) -> float:
    """One worker task's CPU work; returns its wall time."""
    video = segment.init.video
    started = time.perf_counter()
    transcode_segment(
        segment.init.data,
        segment.data,
        rungs_for_source(DEFAULT_LADDER, video.width, video.height),
        sequence=segment.sequence,
        init_index=segment.init.index,
        options=EncoderOptions(),
    )
    return time.perf_counter() - started


def ffmpeg_rtf(source: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            ["sh", str(FFMPEG_LADDER), str(source), out], capture_output=True, text=True, check=True
        )
    match = re.search(r"ffmpeg_ladder_rtf ([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"no figure in the ffmpeg ladder output: {result.stdout!r}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    cache = Path(tempfile.gettempdir()) / "nebula-bench"
    cache.mkdir(exist_ok=True)
    source = make_source(cache / f"src1080_{args.seconds:g}s.flv", seconds=args.seconds)
    segments = package_flv(source)
    media_seconds = sum(s.duration for s in segments)
    print(
        f"source: {source} ({media_seconds:.1f} s, {len(segments)} segments), "
        f"cores {os.cpu_count()}, workers {args.workers}"
    )

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    reference = ffmpeg_rtf(source)
    print(f"ffmpeg_ladder_rtf {reference:.3f}")

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        task_seconds = sorted(pool.map(_ladder, segments))
    wall = time.perf_counter() - started
    ours = media_seconds / wall
    print(f"nebula_ladder_rtf {ours:.3f} (stored segments, {args.workers} worker processes)")
    print(
        f"per-segment task time p50 {task_seconds[len(task_seconds) // 2]:.2f} s "
        f"max {task_seconds[-1]:.2f} s (segment {media_seconds / len(segments):.2f} s)"
    )
    print(f"ratio nebula/ffmpeg {ours / reference:.3f} (target >= 0.95)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
