#!/usr/bin/env python3
"""Uploads end to end: body throughput into the API, then processing to a ready ladder.

    python bench/upload_processing.py [--seconds 60] [--workers 1 2]

For each worker count, `nebula-live up` (embedded stores) takes two files made by the ffmpeg
CLI: an H.264/AAC MP4 (the source is remuxed, only the rungs are encoded) and a VP9/Opus
MKV (the source is transcoded too). Printed per file: upload MB/s, the API's peak RSS growth
while the body streamed, seconds from 202 to `ready`, and the real-time factor of the
processing (media seconds per wall second). The reference is the ffmpeg CLI encoding the same
ladder from the same file in one process (`/work/shared/bench/ffmpeg_ladder.sh`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.rtmp_ingest_load import pids_of  # noqa: E402
from bench.stack import running_stack  # noqa: E402
from nebula_live.processes import resident_bytes  # noqa: E402
from tests.media import make_media_file  # noqa: E402

FFMPEG_LADDER = Path("/work/shared/bench/ffmpeg_ladder.sh")
SOURCES = {
    "h264-aac.mp4": "-c:v libx264 -preset veryfast -b:v 6M -g 60 -pix_fmt yuv420p "
    "-c:a aac -b:a 128k",
    "vp9-opus.mkv": "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 4M -g 120 "
    "-pix_fmt yuv420p -c:a libopus -b:a 128k",
}


def make_file(folder: Path, name: str, seconds: int) -> Path:
    path = folder / f"nebula-bench-{seconds}s-{name}"
    if not path.exists():
        make_media_file(
            path, *SOURCES[name].split(), seconds=seconds, size="1920x1080", timeout=1200
        )
    return path


def ffmpeg_rtf(source: Path) -> float | None:
    if not FFMPEG_LADDER.exists():
        return None
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            ["sh", str(FFMPEG_LADDER), str(source), out], capture_output=True, text=True
        )
    match = re.search(r"ffmpeg_ladder_rtf ([\d.]+)", result.stdout)
    return float(match.group(1)) if match else None


class PeakRss(threading.Thread):
    """Peak resident memory of some processes, sampled every 50 ms until stopped."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.base = resident_bytes(pids)
        self.peak = self.base
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, resident_bytes(self.pids))


def upload(client: httpx.Client, path: Path, api_pids: list[int]) -> dict:
    rss = PeakRss(api_pids)
    rss.start()
    started = time.perf_counter()
    with path.open("rb") as body:
        response = client.post("/api/v1/uploads", files={"file": (path.name, body)})
    sent = time.perf_counter() - started
    rss.done.set()
    rss.join()
    response.raise_for_status()
    upload_id = response.json()["id"]
    accepted = time.perf_counter()
    while True:
        state = client.get(f"/api/v1/uploads/{upload_id}").json()
        if state["status"] != "processing":
            break
        time.sleep(0.2)
    return {
        "status": state["status"],
        "error": state.get("error"),
        "upload_mb_per_s": round(path.stat().st_size / sent / 1e6, 1),
        "api_rss_growth_mib": round((rss.peak - rss.base) / 2**20, 1),
        "processing_s": round(time.perf_counter() - accepted, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    files = {name: make_file(args.folder, name, args.seconds) for name in SOURCES}
    for name, path in files.items():
        rtf = ffmpeg_rtf(path)
        print(json.dumps({"reference": "ffmpeg CLI ladder", "file": name, "rtf": rtf}), flush=True)
    for workers in args.workers:
        with running_stack(workers=workers) as stack:
            api_pids = pids_of(stack.pid, "nebula_live.cli api")
            headers = {"Authorization": f"Bearer {stack.token}"}
            with httpx.Client(base_url=stack.base_url, headers=headers, timeout=600) as client:
                for name, path in files.items():
                    result = upload(client, path, api_pids)
                    rtf = args.seconds / result["processing_s"]
                    print(
                        json.dumps(
                            {"workers": workers, "file": name, **result, "rtf": round(rtf, 3)}
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
