#!/usr/bin/env python3
"""An upload job whose worker process dies: how long until it is done, or given up.

    python bench/upload_worker_loss.py [--seconds 600] [--kills 3]

`nebula-live up` (embedded stores, one batch worker process) takes an H.264/AAC MP4 of
`--seconds` at 160x120 (remuxed: the job runs long enough to be caught). Each time the job
is seen running in a new pool process, that process gets SIGKILL, `--kills` times; Celery
requeues the message at once. Printed: for each kill, the seconds until the next start
took the job lock (the dead delivery's lock has to run out first), then the job's result,
the seconds from the last kill to it, the upload's status and error, and how many starts
of the message were counted. With `--kills` at NEBULA_UPLOAD_MAX_DELIVERIES (3), the start
after the last kill fails the upload instead of running it once more.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import running_stack  # noqa: E402
from packager.celery_app import make_celery  # noqa: E402
from packager.enqueue import UPLOAD_TASK  # noqa: E402
from tests.media import make_media_file  # noqa: E402


def job_pid(celery, upload_id: str, killed: list[int]) -> tuple[str, int] | None:
    """The id and pool process of the upload's job, once it runs in a process not killed."""
    for tasks in (celery.control.inspect(timeout=1).active() or {}).values():
        for task in tasks:
            ours = task["name"] == UPLOAD_TASK and task["args"][0] == upload_id
            if ours and task["worker_pid"] not in killed:
                return task["id"], task["worker_pid"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nebula-bench-loss-"))
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    path = make_media_file(folder / "long.mp4", *h264, seconds=args.seconds, size="160x120")
    with running_stack(workers=1) as stack:
        celery = make_celery(stack.redis_url)
        events = redis.Redis.from_url(stack.redis_url)
        headers = {"Authorization": f"Bearer {stack.token}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as client:
            with path.open("rb") as body:
                upload = client.post("/api/v1/uploads", files={"file": (path.name, body)})
            upload_id = upload.json()["id"]
            killed: list[int] = []
            while (running := job_pid(celery, upload_id, killed)) is None:
                time.sleep(0.2)
            task_id = running[0]
            starts_key = f"nebula:task-starts:{task_id}:0"
            last_kill = time.monotonic()
            for kill in range(args.kills):
                # A start is counted once it holds the job lock: the requeued message waits
                # until the dead delivery's lock runs out.
                while int(events.get(starts_key) or 0) <= kill:
                    time.sleep(0.05)
                if kill:
                    took = time.monotonic() - last_kill
                    print(f"kill {kill}: the next start took the job lock after {took:.1f} s")
                while (running := job_pid(celery, upload_id, killed)) is None:
                    time.sleep(0.2)
                os.kill(running[1], signal.SIGKILL)
                killed.append(running[1])
                last_kill = time.monotonic()
            result = celery.AsyncResult(task_id).get(timeout=3600)
            done = time.monotonic() - last_kill
            state = client.get(f"/api/v1/uploads/{upload_id}").json()
            starts = int(events.get(starts_key) or 0)
    print(f"kill {args.kills}: job result {result!r} {done:.1f} s after it")
    print(f"upload {state['status']} (progress {state['progress']:.2f}): {state.get('error')}")
    print(f"starts counted: {starts}, pool processes killed: {len(killed)}")


if __name__ == "__main__":
    main()
