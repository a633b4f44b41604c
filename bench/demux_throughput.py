#!/usr/bin/env python3
"""Demuxer throughput: how much media one core turns into access units, MPEG-TS and FLV.

    python bench/demux_throughput.py [--seconds 60]

The source is the ingest benchmark's 6 Mbit/s 1080p30 H.264/AAC stream, remuxed by the ffmpeg
CLI to MPEG-TS (as SRT carries it) and FLV (as RTMP carries it). The TS is fed in the
1316-byte payloads SRT delivers; the FLV tag by tag, as the RTMP server does. Printed: media
bitrate, demux throughput in Mbit/s and as a multiple of the stream's bitrate (real-time
streams one core could demux), best of three runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.demux.flv import FlvDemuxer, FlvTagType, iter_flv_tags  # noqa: E402
from media.demux.mpegts import TsDemuxer  # noqa: E402

SRT_PAYLOAD = 1316
RUNS = 3


def make_sources(folder: Path, seconds: int) -> tuple[Path, Path]:
    flv, ts = folder / f"demux-{seconds}s.flv", folder / f"demux-{seconds}s.ts"
    if not flv.exists():
        subprocess.run(
            [
                *["ffmpeg", "-v", "error", "-y"],
                *["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"],
                *["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"],
                *["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M"],
                *["-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(flv)],
            ],
            check=True,
            timeout=1200,
        )
    if not ts.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(flv), "-c", "copy", "-f", "mpegts", str(ts)],
            check=True,
            timeout=300,
        )
    return flv, ts


def demux_ts(data: bytes) -> int:
    demuxer, units = TsDemuxer(), 0
    for offset in range(0, len(data), SRT_PAYLOAD):
        units += len(demuxer.feed(data[offset : offset + SRT_PAYLOAD]))
    return units + len(demuxer.flush())


def demux_flv(data: bytes) -> int:
    demuxer, units = FlvDemuxer(), 0
    for tag in iter_flv_tags(data):
        if tag.tag_type == FlvTagType.VIDEO:
            units += len(demuxer.video(tag.timestamp_ms, tag.payload))
        elif tag.tag_type == FlvTagType.AUDIO:
            units += len(demuxer.audio(tag.timestamp_ms, tag.payload))
    return units


def best_seconds(run: object, data: bytes) -> tuple[float, int]:
    best, units = float("inf"), 0
    for _ in range(RUNS):
        started = time.perf_counter()
        units = run(data)
        best = min(best, time.perf_counter() - started)
    return best, units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    flv, ts = make_sources(Path(tempfile.gettempdir()), args.seconds)
    for name, path, run in (("mpegts", ts, demux_ts), ("flv", flv, demux_flv)):
        data = path.read_bytes()
        seconds, units = best_seconds(run, data)
        stream_mbit = len(data) * 8 / args.seconds / 1e6
        mbit_per_s = len(data) * 8 / seconds / 1e6
        print(
            json.dumps(
                {
                    "container": name,
                    "media_seconds": args.seconds,
                    "stream_mbit_s": round(stream_mbit, 2),
                    "units": units,
                    "demux_s": round(seconds, 3),
                    "throughput_mbit_s": round(mbit_per_s, 1),
                    "realtime_streams_per_core": round(mbit_per_s / stream_mbit),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
