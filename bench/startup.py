#!/usr/bin/env python3
"""Cold start of `nebula-live up` to healthy, first run (fresh data dir) and second run
(same data dir), and the resident memory of the whole process tree when idle.

    python bench/startup.py [--workers 2] [--idle-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import running_stack  # noqa: E402
from nebula_live.processes import process_tree, resident_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=15)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="nebula-startup-"))
    try:
        for run in ("first", "second"):
            started = time.monotonic()
            with running_stack(workers=args.workers, data=data) as stack:
                healthy = time.monotonic() - started
                time.sleep(args.idle_seconds)
                tree = process_tree(stack.pid)
                print(
                    json.dumps(
                        {
                            "run": run,
                            "seconds_to_healthy": round(healthy, 2),
                            "processes": len(tree),
                            "idle_rss_mib": round(resident_bytes(tree) / 2**20, 1),
                            "workers": args.workers,
                        }
                    ),
                    flush=True,
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
