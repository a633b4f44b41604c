#!/usr/bin/env python3
"""Live ladder latency: source segment recorded → every rung of it recorded, for one stream.

    python bench/ladder_live_latency.py [--source FILE] [--workers 2]

Runs `nebula-live up` (embedded stores, `--workers` Celery processes), publishes the source
once with `ffmpeg -re -c copy` over RTMP and, from the segment rows' insert times, prints
per-segment ladder latency p50/max in seconds and in segment durations. The default source
is the one bench/rtmp_ingest_load.py makes (1080p30, 6 Mbit/s, 2 s GOP).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.stack import running_stack  # noqa: E402

LATENCY_SQL = """
SELECT src.sequence, src.duration,
       EXTRACT(EPOCH FROM max(rung.created_at) - src.created_at) AS latency,
       count(rung.id) AS rungs
FROM segments src
JOIN renditions sr ON sr.id = src.rendition_id AND sr.name = 'source'
JOIN renditions rr ON rr.session_id = sr.session_id AND rr.name <> 'source'
JOIN segments rung ON rung.rendition_id = rr.id AND rung.sequence = src.sequence
GROUP BY src.sequence, src.duration, src.created_at
ORDER BY src.sequence
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/tmp/nebula-bench-src1080.flv"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with running_stack(workers=args.workers) as stack:
        stream = stack.create_stream("ladder latency")
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-re",
                "-i",
                str(args.source),
                "-c",
                "copy",
                "-f",
                "flv",
                stream["rtmp_url"],
            ],
            check=True,
        )
        with psycopg.connect(stack.database_url) as conn:
            # the last segments are still being transcoded when the publisher stops
            for _ in range(120):
                rows = conn.execute(LATENCY_SQL).fetchall()
                sources = conn.execute(
                    "SELECT count(*) FROM segments s JOIN renditions r ON r.id = s.rendition_id "
                    "WHERE r.name = 'source'"
                ).fetchone()[0]
                if rows and len(rows) == sources and all(r[3] == rows[0][3] for r in rows):
                    break
                conn.commit()
                time.sleep(1)
    latencies = [float(r[2]) for r in rows]
    durations = [float(r[1]) for r in rows]
    target = statistics.median(durations)
    print(
        json.dumps(
            {
                "segments": len(rows),
                "rungs": rows[0][3] if rows else 0,
                "workers": args.workers,
                "latency_s_p50": round(statistics.median(latencies), 3),
                "latency_s_max": round(max(latencies), 3),
                "latency_segments_p50": round(statistics.median(latencies) / target, 2),
                "latency_segments_max": round(max(latencies) / target, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
