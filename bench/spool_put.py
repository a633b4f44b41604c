#!/usr/bin/env python3
"""What spooling one live segment costs: its sidecar and its bytes, fsynced, on this disk.

    python bench/spool_put.py [--segments 200] [--megabytes 1.5] [--dir /path/on/the/disk]

Each put writes the segment's sidecar (a `SpoolRecord` as JSON, its init segment in it) and
then its bytes, each whole and fsynced, and fsyncs the folder. Printed: the put's time, p50,
p95 and max, beside the same bytes written and fsynced alone (what a put did before it had
a sidecar), and the sidecar's size. The default segment is 2 s of a 6 Mbit/s stream. The
spool is in the system's temporary folder unless `--dir` names one on the ingest's disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest import spool_record  # noqa: E402
from ingest.spool import Spool  # noqa: E402
from ingest.spool_record import SpoolRecord  # noqa: E402
from media.hls.segment_packager import InitSegment, PackagedSegment  # noqa: E402
from media.types import AudioConfig, VideoCodec, VideoConfig  # noqa: E402

VIDEO = VideoConfig(VideoCodec.H264, os.urandom(40), 1920, 1080, "avc1.64002a")
AUDIO = AudioConfig(b"\x11\x90", 2, 48000, 2)
INIT = InitSegment(0, os.urandom(800), VIDEO, AUDIO)  # about what the fMP4 writer makes


def record(session_id: uuid.UUID, sequence: int) -> SpoolRecord:
    segment = PackagedSegment(sequence, sequence * 180_000, 180_000, b"", INIT, False, True, 60)
    return SpoolRecord(
        stream_id=uuid.uuid4(),
        session_id=session_id,
        segment=segment,
        timeline_start=0,
        wall_clock_origin=datetime.now(UTC),
        transcode=True,
        metadata={"encoder": "obs-output module (libobs version 30.1.2)", "framerate": 30.0},
        bytes_ingested=sequence * 1_500_000,
        gop_seconds=2.0,
        target_duration=2,
    )


def plain_write(folder: Path, data: bytes, index: int) -> None:
    """The bytes alone, written whole and fsynced: a put before sidecars."""
    path = folder / f"plain-{index}.m4s"
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    path.unlink()


def milliseconds(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=1.5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    data = os.urandom(int(args.megabytes * 2**20))
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        spool = Spool(Path(folder) / "spool", max_bytes=2**40)
        session = uuid.uuid4()
        puts, plains = [], []
        for sequence in range(args.segments):
            started = time.perf_counter()
            entry = spool.put(record(session, sequence), data)
            puts.append(time.perf_counter() - started)
            spool.remove(entry)
            started = time.perf_counter()
            plain_write(Path(folder), data, sequence)
            plains.append(time.perf_counter() - started)
    sidecar = len(spool_record.encode(record(session, 0)))
    print(
        json.dumps(
            {
                "segments": args.segments,
                "segment_bytes": len(data),
                "sidecar_bytes": sidecar,
                "put_ms": milliseconds(puts),
                "bytes_alone_ms": milliseconds(plains),
            }
        )
    )


if __name__ == "__main__":
    main()
