#!/usr/bin/env python3
"""Issue 14's eight faults, one at a time, each during a real publish with the ladder on:
what is lost, what is wrongly ended, and what the fault costs a well-behaved publisher and
viewer.

Each fault gets a stack of its own (tests/fault_stack.py: ingest, API and a Celery worker
as processes, against a PostgreSQL and a Redis of the stack's own, which it can restart,
and an S3 server the ingest reaches through a cut). A well-behaved publisher, `ffmpeg -re`
looping a 480p30 source with a 2 s GOP, publishes over RTMP into a stream with one 360p
rung; a viewer polls the stream's source playlist every 0.25 s. After `--before` seconds
the fault is injected; `--after` seconds after it is over the publisher unpublishes. Then,
per fault (the source and the rung together where a count says "segments"):

  published      segments the publisher's media makes: each connection's sent media time
                 (ffmpeg -progress) over the 2 s GOP, rounded up, and a rung one for each
  recorded       segments with a row (a rung's GAP rows are counted apart, as gap_rows)
  listed         media segments the recording's playlists list (not EXT-X-GAP)
  decodable      listed segments ffmpeg decodes without an error (init + segment)
  wrongly_ended  sessions of the stream that ended before the publisher stopped
  max RSS        of the ingest and the API processes, sampled every 0.5 s
  publisher delay  row recorded minus the end of its media at the ingest (its program
                 date-time + duration): p50 before the fault, p50 and max during it
                 (from its start to 10 s after its end, by the media's end)
  viewer delay   first seen in the stream's source playlist minus the same, before and
                 during, and the longest the playlist stood still during the fault

  python bench/faults.py                       # all eight, S3 down 120 s
  python bench/faults.py --only postgres,redis --before 15 --after 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import m3u8
import psutil
from sqlalchemy import select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.api_hostile import flood  # noqa: E402
from bench.rtmp_slowloris import Slowloris  # noqa: E402
from core.db import session_scope  # noqa: E402
from core.models import LiveSession, Rendition, Segment, SegmentStatus  # noqa: E402
from core.stream_keys import new_stream_key  # noqa: E402
from ingest.srt import libsrt  # noqa: E402
from media.ladder import SOURCE  # noqa: E402
from tests.fault_stack import FaultStack, fault_stack  # noqa: E402
from tests.media import make_source, publish  # noqa: E402
from tests.services import s3_server, wait_for  # noqa: E402

GOP_SECONDS = 2.0
RUNG = {"name": "360p", "height": 360, "bitrate": 800_000}
POLL_SECONDS = 0.25
# "During" a fault runs on this long after it is over: what it made late is listed then.
AFTERMATH_SECONDS = 10.0
# How long the ladder may take to redo what it missed once the publish is over.
LADDER_SETTLE_SECONDS = 180.0
FIRST_SEGMENT_TIMEOUT = 60
SOURCE_FILE = Path(tempfile.gettempdir()) / "nebula-bench-faults-480p-30s.flv"


class Publisher:
    """`ffmpeg -re` looping the source over RTMP, started again (a new connection) on
    `reconnect`; what each connection sent, in media seconds, from its -progress."""

    def __init__(self, source: Path, url: str) -> None:
        self.source = source
        self.url = url
        self.sent: list[float] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.sent.append(0.0)
        index = len(self.sent) - 1
        self.process = publish(
            self.source, self.url, "-progress", "pipe:1", "-stats_period", "0.5", loop=True
        )
        self._reader = threading.Thread(target=self._read, args=(self.process, index), daemon=True)
        self._reader.start()
        return self.process

    def _read(self, process: subprocess.Popen[bytes], index: int) -> None:
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("out_time_us=") and line[12:].isdigit():
                self.sent[index] = int(line[12:]) / 1e6

    def reconnect(self, deadline: float) -> float:
        """Start again every 2 s until the ingest keeps the publish; when it did."""
        while time.monotonic() < deadline:
            process = self.start()
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                return time.monotonic()
            self.sent.pop()  # refused: it sent nothing that counts
            time.sleep(2)
        raise TimeoutError("the publish was never taken again")

    def stop(self) -> None:
        """An explicit unpublish: ffmpeg closes its stream on SIGINT."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            self.process.wait(20)
        if self._reader is not None:
            self._reader.join(5)

    def segments(self) -> int:
        return sum(math.ceil(sent / GOP_SECONDS - 1e-6) for sent in self.sent if sent > 0)


@dataclass
class Viewer:
    """Polls a playlist; when each media segment was first listed, and its media's end."""

    url: str
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)  # uri: (seen, end)
    new_at: list[float] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(self.url)
                    if response.status_code == 200:
                        self._take(m3u8.loads(response.text), time.time())
                stop.wait(POLL_SECONDS)

    def _take(self, playlist: m3u8.M3U8, now: float) -> None:
        for segment in playlist.segments:
            if segment.gap_tag or "/slate/" in segment.uri or segment.uri in self.seen:
                continue
            start = segment.current_program_date_time
            end = start.timestamp() + segment.duration if start else now
            self.seen[segment.uri] = (now, end)
            self.new_at.append(now)

    def delays(self, since: float, until: float) -> list[float]:
        return [seen - end for seen, end in self.seen.values() if since <= end < until]

    def longest_standstill(self, since: float, until: float) -> float:
        times = [since, *(t for t in self.new_at if since < t < until), until]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


class PeakRss:
    """The largest resident set seen of the stack's ingest and API (their pids may change)."""

    def __init__(self, stack: FaultStack) -> None:
        self.stack = stack
        self.peak = {"ingest": 0, "api": 0}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for name, process in (("ingest", self.stack.ingest), ("api", self.stack.api)):
                with contextlib.suppress(psutil.Error, AttributeError):  # None: restarting
                    rss = psutil.Process(process.pid).memory_info().rss
                    self.peak[name] = max(self.peak[name], rss)
            stop.wait(0.5)


# The faults. Each is injected into a running stack with the publisher on it and returns
# what it observed of itself; `run_fault` times it.


def s3_outage(seconds: float) -> Callable[[FaultStack, Publisher], dict]:
    def inject(stack: FaultStack, _publisher: Publisher) -> dict:
        stack.storage_cut.cut()
        time.sleep(seconds)
        stack.storage_cut.restore()
        return {"down_s": seconds}

    return inject


def postgres_restart(stack: FaultStack, _publisher: Publisher) -> dict:
    stack.restart_postgres(down_seconds=10)
    return {"down_s": 10}


def redis_restart(stack: FaultStack, _publisher: Publisher) -> dict:
    stack.restart_redis(down_seconds=5)
    return {"down_s": 5}


def ingest_kill(stack: FaultStack, publisher: Publisher) -> dict:
    killed = time.monotonic()
    stack.kill_ingest()
    publisher.process.wait(30)  # its connection broke
    stack.start_ingest()
    taken = publisher.reconnect(time.monotonic() + 90)
    return {"publish_taken_again_s": round(taken - killed, 1)}


def worker_kill(stack: FaultStack, _publisher: Publisher) -> dict:
    stack.kill_worker()
    stack.start_worker()  # another worker host, as a deployment runs more than one
    return {}


def slowloris(connections: int, seconds: float) -> Callable[[FaultStack, Publisher], dict]:
    def inject(stack: FaultStack, _publisher: Publisher) -> dict:
        slow = Slowloris(stack.settings.rtmp_port, connections, per_address=10, dribble=2.0)
        stop = threading.Event()
        attacker = threading.Thread(target=slow.run, args=(stop,), daemon=True)
        attacker.start()
        time.sleep(seconds)
        stop.set()
        attacker.join()
        return {"slow_opened": slow.opened, "slow_cut": len(slow.lifetimes)}

    return inject


def srt_bad_keys(count: int) -> Callable[[FaultStack, Publisher], dict]:
    """`count` SRT callers, 50 at a time, each with a well-formed key nobody issued: the
    costly kind, looked up before it is refused."""

    def call(port: int) -> int:
        sock = libsrt.create_socket()
        try:
            libsrt.set_flag(sock, libsrt.SockOpt.STREAMID, f"#!::r=live/{new_stream_key()}")
            try:
                libsrt.connect(sock, "127.0.0.1", port)
            except libsrt.SrtError:
                return libsrt.reject_reason(sock)
            return 0
        finally:
            libsrt.close(sock)

    def inject(stack: FaultStack, _publisher: Publisher) -> dict:
        with ThreadPoolExecutor(50) as pool:
            reasons = list(pool.map(call, [stack.settings.srt_port] * count))
        return {
            "handshakes": count,
            "rejected_403": reasons.count(libsrt.RejectReason.FORBIDDEN),
            "accepted": reasons.count(0),
        }

    return inject


def json_body(total: int) -> Callable[[FaultStack, Publisher], dict]:
    def inject(stack: FaultStack, _publisher: Publisher) -> dict:
        answer = flood("127.0.0.1", stack.settings.http_port, total)
        return {
            "answer": answer["answer"],
            "sent_before_answer": answer["bytes_sent_before_answer"],
        }

    return inject


# Running one, and what it left.


def _rows(stack: FaultStack, stream_id: str) -> tuple[list[LiveSession], dict[str, list[Segment]]]:
    with session_scope(stack.settings.database_url) as db:
        sessions = list(
            db.scalars(select(LiveSession).where(LiveSession.stream_id == uuid.UUID(stream_id)))
        )
        rows: dict[str, list[Segment]] = {}
        for name, segment in db.execute(
            select(Rendition.name, Segment)
            .join(Segment, Segment.rendition_id == Rendition.id)
            .where(Rendition.session_id.in_([s.id for s in sessions]))
            .order_by(Segment.sequence)
        ):
            rows.setdefault(name, []).append(segment)
        db.expunge_all()
    return sessions, rows


def _ladder_done(_sessions: list[LiveSession], rows: dict[str, list[Segment]]) -> bool:
    """Every source segment has its rung made: a GAP a late result has not replaced yet
    still waits (`LADDER_SETTLE_SECONDS` at most)."""
    media = sum(r.status == SegmentStatus.READY for r in rows.get(SOURCE, []))
    return sum(r.status == SegmentStatus.READY for r in rows.get(RUNG["name"], [])) >= media


def _settle(stack: FaultStack, stream_id: str) -> None:
    deadline = time.monotonic() + LADDER_SETTLE_SECONDS
    while not _ladder_done(*_rows(stack, stream_id)) and time.monotonic() < deadline:
        time.sleep(1)


def _decode_error(client: httpx.Client, base: str, segment: m3u8.Segment, work: Path) -> str:
    """What ffmpeg says decoding the segment (after its init) at -v error; "" if nothing."""
    init = client.get(f"{base}{segment.init_section.uri}") if segment.init_section else None
    media = client.get(f"{base}{segment.uri}")
    for response in (init, media):
        if response is not None and response.status_code != 200:
            return f"{response.url} answered {response.status_code}"
    path = work / f"{base.strip('/').replace('/', '-')}-{segment.uri.rsplit('/', 1)[-1]}.mp4"
    path.write_bytes((init.content if init is not None else b"") + media.content)
    result = subprocess.run(
        # Frames keep the demuxer's time base: on the null muxer's default 1/fps grid, the
        # millisecond jitter of an FLV source's timestamps puts two frames on one tick, and
        # ffmpeg reports "non monotonically increasing dts" for frames that all decoded.
        ["ffmpeg", "-v", "error", "-i", str(path), "-enc_time_base:v", "-1", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    error = result.stderr.strip() or (f"exit code {result.returncode}" if result.returncode else "")
    if not error:
        path.unlink()  # those that do not decode are kept, for a look
    return error


def _listed_and_decodable(stack: FaultStack, sessions: list[LiveSession]) -> tuple[int, list[str]]:
    listed, undecodable = 0, []
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        work = Path(tempfile.mkdtemp(prefix="nebula-bench-faults-"))
        for session in sessions:
            for rendition in (SOURCE, RUNG["name"]):
                path = f"/hls/sessions/{session.id}/{rendition}/index.m3u8"
                response = client.get(path)
                if response.status_code != 200:
                    continue
                playlist = m3u8.loads(response.text, uri=f"{stack.api_url}{path}")
                base = f"/hls/sessions/{session.id}/{rendition}/"
                for segment in playlist.segments:
                    if segment.gap_tag:
                        continue
                    listed += 1
                    if error := _decode_error(client, base, segment, work):
                        name = segment.uri.rsplit("/", 1)[-1]
                        undecodable.append(f"{rendition}/{name}: {error.splitlines()[0]}")
    return listed, undecodable


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def _recorded_delay(segment: Segment) -> tuple[float, float]:
    """(media end at the ingest, recorded minus that), both in Unix seconds."""
    end = segment.program_date_time + timedelta(seconds=segment.duration)
    return end.timestamp(), (segment.created_at - end).total_seconds()


@dataclass
class Window:
    start: float
    end: float

    def phase(self, at: float) -> str | None:
        if at < self.start:
            return "before"
        return "during" if at <= self.end else None


def run_fault(
    name: str, inject: Callable[[FaultStack, Publisher], dict], s3, args: argparse.Namespace
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"nebula-bench-faults-{name}-"))
    with fault_stack(s3, work) as stack:
        stream = stack.create_stream(f"fault {name}", ladder=[RUNG])
        publisher = Publisher(SOURCE_FILE, stack.rtmp_url(stream["stream_key"]))
        stop = threading.Event()
        viewer = Viewer(f"{stack.api_url}/hls/{stream['id']}/{SOURCE}/index.m3u8")
        rss = PeakRss(stack)
        threads = [threading.Thread(target=t.run, args=(stop,), daemon=True) for t in (viewer, rss)]
        publisher.start()
        wait_for(lambda: stack.source_rows(stream["id"]), FIRST_SEGMENT_TIMEOUT, "a segment")
        for thread in threads:
            thread.start()
        time.sleep(args.before)
        started = time.time()
        observed = inject(stack, publisher)
        window = Window(started, time.time() + AFTERMATH_SECONDS)
        time.sleep(args.after)
        stopped = datetime.fromtimestamp(time.time()).astimezone()
        publisher.stop()
        wait_for(
            lambda: set(stack.session_statuses(stream["id"])) == {"ended"}, 90, "the session's end"
        )
        stop.set()
        for thread in threads:
            thread.join(10)
        _settle(stack, stream["id"])
        sessions, rows = _rows(stack, stream["id"])
        listed, undecodable = _listed_and_decodable(stack, sessions)

    source = [r for r in rows.get(SOURCE, []) if r.status == SegmentStatus.READY]
    rung = rows.get(RUNG["name"], [])
    delays: dict[str, list[float]] = {"before": [], "during": []}
    for segment in source:
        end, delay = _recorded_delay(segment)
        if (phase := window.phase(end)) is not None:
            delays[phase].append(delay)
    published = publisher.segments()
    return {
        "fault": name,
        **observed,
        "fault_s": round(window.end - window.start - AFTERMATH_SECONDS, 1),
        "published": 2 * published,
        "recorded": len(source) + sum(r.status == SegmentStatus.READY for r in rung),
        "gap_rows": sum(r.status != SegmentStatus.READY for r in rung),
        "listed": listed,
        "decodable": listed - len(undecodable),
        "undecodable": undecodable,
        "sessions": len(sessions),
        "wrongly_ended": sum(s.ended_at is not None and s.ended_at < stopped for s in sessions),
        "ingest_max_rss_mib": round(rss.peak["ingest"] / 2**20),
        "api_max_rss_mib": round(rss.peak["api"] / 2**20),
        "publisher_delay_before_p50_s": _stats(delays["before"])["p50"],
        "publisher_delay_during_s": _stats(delays["during"]),
        "viewer_delay_before_p50_s": _stats(viewer.delays(0, window.start))["p50"],
        "viewer_delay_during_s": _stats(viewer.delays(window.start, window.end)),
        "viewer_standstill_during_s": round(viewer.longest_standstill(window.start, window.end), 1),
    }


COLUMNS = (
    ("fault", "fault"),
    ("fault_s", "fault s"),
    ("published", "published"),
    ("recorded", "recorded"),
    ("gap_rows", "GAP"),
    ("listed", "listed"),
    ("decodable", "decodable"),
    ("wrongly_ended", "wrongly ended"),
    ("ingest_max_rss_mib", "ingest RSS MiB"),
    ("api_max_rss_mib", "API RSS MiB"),
    ("publisher_delay_before_p50_s", "pub. delay before"),
    ("publisher_delay_during_s", "pub. delay during p50/max"),
    ("viewer_delay_before_p50_s", "viewer delay before"),
    ("viewer_delay_during_s", "viewer delay during p50/max"),
    ("viewer_standstill_during_s", "viewer standstill"),
)


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return f"{value['p50']} / {value['max']}"
    return str(value)


def table(results: list[dict]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(r[key]) for key, _ in COLUMNS) + " |" for r in results]
    return "\n".join(lines)


def faults(args: argparse.Namespace) -> dict[str, Callable[[FaultStack, Publisher], dict]]:
    return {
        "s3": s3_outage(args.s3_seconds),
        "postgres": postgres_restart,
        "redis": redis_restart,
        "ingest_kill": ingest_kill,
        "worker_kill": worker_kill,
        "slowloris": slowloris(500, 30),
        "srt_bad_keys": srt_bad_keys(1000),
        "json_1gb": json_body(2**30),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated fault names (default: all)")
    parser.add_argument("--s3-seconds", type=float, default=120)
    parser.add_argument("--before", type=float, default=20)
    parser.add_argument("--after", type=float, default=30)
    args = parser.parse_args()
    chosen = faults(args)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    make_source(SOURCE_FILE, seconds=30, size="854x480", video_bitrate="1M")
    results = []
    with s3_server() as s3:
        for name, inject in chosen.items():
            result = run_fault(name, inject, s3, args)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(table(results))


if __name__ == "__main__":
    main()
