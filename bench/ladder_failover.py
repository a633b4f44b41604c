#!/usr/bin/env python3
"""Live ladder failover: a worker host SIGKILLed mid-task → its rung segments listed again.

    python bench/ladder_failover.py [--kills 5] [--seconds 120] [--size 1280x720]

Runs `nebula-live ingest`, `api` and two `worker --pool live` processes (one pool process
each) against a fresh database on the machine's PostgreSQL (TEST_POSTGRES_URL, as the tests
do) and a Redis and an S3 server of its own, all with the default ladder settings. It publishes a
generated source over RTMP in real time and, `--kills` times, SIGKILLs the process group of
the worker holding a segment's lease (the whole "host": its worker and its pool process),
starting a replacement at once. For each kill it prints, from the kill:

- listed: the top rung's live playlist, as the API serves it, lists the segment again (as a
  gap, or with its media if the redo came first), so the rung is moving on;
- taken: another worker holds the segment's lease (the redo started);
- done: the segment's rung rows are recorded (the job left the outbox);
- gap: whether the segment was listed as EXT-X-GAP (it missed its deadline).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import m3u8  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from core.db import session_scope  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import LadderJob, Rendition, Segment  # noqa: E402
from core.settings import Settings  # noqa: E402
from packager.keys import segment_name  # noqa: E402
from tests.media import make_source, publish  # noqa: E402
from tests.services import (  # noqa: E402
    free_port,
    fresh_database,
    http_status,
    nebula_process,
    redis_server,
    s3_server,
    settings_env,
    tcp_open,
    wait_for,
)

POLL_SECONDS = 0.05
LOGS = Path(tempfile.gettempdir()) / "nebula-bench-failover"


def _job(database_url: str, session_id: uuid.UUID, sequence: int) -> LadderJob | None:
    with session_scope(database_url) as db:
        return db.scalars(
            select(LadderJob).where(
                LadderJob.session_id == session_id, LadderJob.sequence == sequence
            )
        ).first()


def _held_job(database_url: str) -> LadderJob | None:
    """A job some worker is running right now, its lease freshly taken."""
    with session_scope(database_url) as db:
        return db.scalars(
            select(LadderJob)
            .where(LadderJob.lease_until > func.now())
            .order_by(LadderJob.created_at.desc())
        ).first()


def _listed(api: str, stream_id: str, rung: str, sequence: int) -> bool | None:
    """None while the rung's live playlist does not list the segment, else whether it is a GAP."""
    text = urllib.request.urlopen(f"{api}/hls/{stream_id}/{rung}/index.m3u8", timeout=5).read()
    for segment in m3u8.loads(text.decode()).segments:
        if segment.uri.endswith(segment_name(sequence)):
            return bool(segment.gap_tag)
    return None


def _rung_made(database_url: str) -> tuple[uuid.UUID, str] | None:
    """The live session and its tallest rung, once that rung has a segment."""
    with session_scope(database_url) as db:
        row = db.execute(
            select(Rendition.session_id, Rendition.name)
            .join(Segment)
            .where(Rendition.name != "source")
            .order_by(Rendition.height.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=120, help="length of the publish")
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    source = make_source(
        Path(tempfile.gettempdir()) / f"nebula-bench-failover-{args.size}-{args.seconds}s.flv",
        seconds=args.seconds,
        size=args.size,
    )
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server())
        redis_url = stack.enter_context(redis_server())
        database_url = stack.enter_context(fresh_database())
        upgrade(database_url)
        data = Path(tempfile.mkdtemp(prefix="nebula-bench-failover-"))
        settings = Settings(
            data_dir=data,
            bind_host="127.0.0.1",
            http_port=free_port(),
            rtmp_port=free_port(),
            srt_port=free_port(),
            database_url=database_url,
            redis_url=redis_url,
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_bucket="nebula-bench",
            api_token="bench-token",
            live_workers=1,
            log_level="WARNING",
        )
        env = settings_env(settings)
        stack.enter_context(nebula_process("ingest", env, LOGS / "ingest.log"))
        stack.enter_context(nebula_process("api", env, LOGS / "api.log"))
        workers = {}
        started = itertools.count()

        def start_worker() -> None:
            name = f"worker-{next(started)}.log"
            proc = stack.enter_context(nebula_process("worker", env, LOGS / name, "--pool", "live"))
            workers[proc.pid] = proc

        start_worker()
        start_worker()
        api = f"http://127.0.0.1:{settings.http_port}"
        wait_for(lambda: tcp_open(settings.rtmp_port), 60, "ingest")
        wait_for(lambda: http_status(f"{api}/healthz") == 200, 90, "api and workers")
        with httpx.Client(base_url=api, headers={"Authorization": "Bearer bench-token"}) as client:
            stream = client.post("/api/v1/streams", json={"name": "failover"}).json()
        publisher = publish(
            source, f"rtmp://127.0.0.1:{settings.rtmp_port}/live/{stream['stream_key']}"
        )
        stack.callback(publisher.kill)

        wait_for(lambda: _rung_made(database_url), 180, "the first rung segment")
        session, rung = _rung_made(database_url)
        rows: list[tuple[int, float, float, float, bool]] = []
        while len(rows) < args.kills:
            time.sleep(4)  # let the rung settle after the previous kill
            wait_for(lambda: _held_job(database_url) is not None, 60, "a running rung task")
            job = _held_job(database_url)
            pid = int(job.lease_worker.split("@")[0].removeprefix("live-"))
            os.killpg(pid, signal.SIGKILL)
            killed = time.monotonic()
            workers.pop(pid).wait(10)
            start_worker()
            if _job(database_url, session, job.sequence) is None:
                continue  # it finished just before the kill
            listed = taken = done = None
            gap = False
            while done is None or listed is None:
                now = time.monotonic() - killed
                current = _job(database_url, session, job.sequence)
                if current is None:
                    done = done if done is not None else now
                elif taken is None and current.lease_worker not in (None, job.lease_worker):
                    taken = now
                if listed is None:
                    state = _listed(api, stream["id"], rung, job.sequence)
                    if state is not None:
                        listed, gap = now, state
                if now > 120:
                    raise SystemExit(f"segment {job.sequence} not recovered after 120 s")
                time.sleep(POLL_SECONDS)
            taken = taken if taken is not None else done  # redone faster than a poll
            rows.append((job.sequence, listed, taken, done, gap))
            print(
                f"kill {len(rows)}: segment {job.sequence} ({job.lease_worker}): listed "
                f"{listed:.1f} s ({'GAP' if gap else 'media'}), taken {taken:.1f} s, "
                f"done {done:.1f} s",
                flush=True,
            )
        publisher.terminate()
    print(
        f"\n{len(rows)} kills, rung {rung}: deadline {settings.rung_deadline_targets:g} targets"
        f" of {settings.segment_seconds:g} s, lease {settings.ladder_lease_seconds:g} s, sweep"
        f" every {settings.ladder_sweep_seconds:g} s"
    )
    for label, index in (("listed", 1), ("taken", 2), ("done", 3)):
        values = [row[index] for row in rows]
        print(f"  {label:<7} median {statistics.median(values):.1f} s, max {max(values):.1f} s")


if __name__ == "__main__":
    main()
