#!/usr/bin/env python3
"""RTMP slowloris beside a real publisher: are slow clients cut, and does the publisher notice?

`nebula-live ingest` and `api` against a fresh database on the machine's PostgreSQL, a Redis
and an S3 server of their own (tests/services.py), with the default RTMP settings (publish
deadline 10 s, 1000 connections, 16 per IP); nothing of another stack is shared. One
`ffmpeg -re -c copy` publishes a 360p30 source; its media playlist is polled every 20 ms.
After `--before` seconds, `--slow` connections (from 127.x.y.2, `--per-address` per
address, under the per-IP cap) send one handshake byte every `--dribble` seconds for
`--during` seconds; each one the server cuts is opened again, so the pressure stays. Then a
burst of `--burst` connections from one address shows the per-IP cap. Printed as JSON:
  * slow connections opened and cut, and after how long each cut came (min, p50, max);
  * burst connections closed on accept (within a second) and held;
  * the publisher's segment latency (listed in the playlist minus sent, as in
    bench/rtmp_ingest_load.py), p50 and max, before and during the slow clients.

  python bench/rtmp_slowloris.py --slow 500 --before 20 --during 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.rtmp_ingest_load import Probe  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.settings import Settings  # noqa: E402
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

LOGS = Path(tempfile.gettempdir()) / "nebula-bench-slowloris"
RTMP_PORT = free_port()
SOURCE_CMD = (
    "ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi "
    "-i sine=frequency=440:sample_rate=48000 -t {seconds} -c:v libx264 -preset veryfast "
    "-b:v 1M -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 96k {out}"
)


def address(index: int, per_address: int) -> str:
    """Slow client `index`'s source address: `per_address` share one, none is 127.0.0.1."""
    n = index // per_address
    return f"127.{1 + n // 250}.{n % 250}.2"


def connect_from(source_ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@dataclass
class Slowloris:
    port: int
    count: int
    per_address: int
    dribble: float
    lifetimes: list[float] = field(default_factory=list)
    cut_at: list[float] = field(default_factory=list)
    opened: int = 0

    def run(self, stop: threading.Event) -> None:
        conns: dict[int, tuple[socket.socket, float]] = {}
        for index in range(self.count):
            conns[index] = (connect_from(address(index, self.per_address), self.port), time.time())
            self.opened += 1
        next_send = time.time()
        while not stop.is_set():
            now = time.time()
            send = now >= next_send
            if send:
                next_send = now + self.dribble
            for index, (sock, opened_at) in list(conns.items()):
                if closed_by_server(sock):
                    sock.close()
                    self.lifetimes.append(now - opened_at)
                    self.cut_at.append(now)
                    conns[index] = (connect_from(address(index, self.per_address), self.port), now)
                    self.opened += 1
                elif send:
                    with contextlib.suppress(OSError):
                        sock.send(b"\x03")
            time.sleep(0.05)
        for sock, _ in conns.values():
            sock.close()


def burst(port: int, count: int) -> dict[str, int]:
    """`count` connections from one address at once: how many are closed within a second."""
    socks = [connect_from("127.250.250.250", port) for _ in range(count)]
    time.sleep(1.0)
    refused = sum(closed_by_server(sock) for sock in socks)
    for sock in socks:
        sock.close()
    return {"burst": count, "burst_closed_on_accept": refused, "burst_held": count - refused}


@contextlib.contextmanager
def own_stack() -> Iterator[str]:
    """Ingest and API of our own; yields the API's base URL."""
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(s3_server())
        redis_url = stack.enter_context(redis_server())
        database_url = stack.enter_context(fresh_database())
        upgrade(database_url)
        settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="nebula-bench-slowloris-")),
            bind_host="127.0.0.1",
            http_port=free_port(),
            rtmp_port=RTMP_PORT,
            srt_port=free_port(),
            database_url=database_url,
            redis_url=redis_url,
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_bucket="nebula-bench",
            api_token="bench-token",
            log_level="INFO",
        )
        env = settings_env(settings)
        stack.enter_context(nebula_process("ingest", env, LOGS / "ingest.log"))
        stack.enter_context(nebula_process("api", env, LOGS / "api.log"))
        api = f"http://127.0.0.1:{settings.http_port}"
        wait_for(lambda: tcp_open(RTMP_PORT), 60, "ingest")
        wait_for(lambda: http_status(f"{api}/docs") == 200, 60, "api")
        yield api


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--per-address", type=int, default=10)
    parser.add_argument("--dribble", type=float, default=2.0)
    parser.add_argument("--before", type=float, default=20)
    parser.add_argument("--during", type=float, default=30)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--source", type=Path, default=Path("/tmp/nebula-bench-src360.flv"))
    args = parser.parse_args()
    seconds = int(args.before + args.during + 30)
    if not args.source.exists():
        subprocess.run(SOURCE_CMD.format(seconds=seconds, out=args.source).split(), check=True)

    with own_stack() as api:
        with httpx.Client(base_url=api, headers={"Authorization": "Bearer bench-token"}) as client:
            body = {"name": "slowloris bench", "ladder": []}
            stream = client.post("/api/v1/streams", json=body).json()
        probe = Probe(f"{api}/hls/{stream['id']}/source/index.m3u8")
        publish_url = f"rtmp://127.0.0.1:{RTMP_PORT}/live/{stream['stream_key']}"
        publisher = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1"]
            + ["-i", str(args.source), "-c", "copy", "-progress", "pipe:1"]
            + ["-stats_period", "0.1", "-f", "flv", publish_url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        stop_poll = threading.Event()
        threads = [
            threading.Thread(target=probe.read_progress, args=(publisher.stdout,), daemon=True),
            threading.Thread(target=probe.poll, args=(stop_poll,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.before)
        attack_start = time.time()
        slow = Slowloris(RTMP_PORT, args.slow, args.per_address, args.dribble)
        stop_slow = threading.Event()
        attacker = threading.Thread(target=slow.run, args=(stop_slow,), daemon=True)
        attacker.start()
        time.sleep(args.during)
        stop_slow.set()
        attacker.join()
        attack_end = time.time()
        burst_result = burst(RTMP_PORT, args.burst)
        time.sleep(4)  # the segments that closed during the attack get listed
        stop_poll.set()
        publisher_alive = publisher.poll() is None
        publisher.terminate()
        publisher.wait()

    sequences = sorted(probe.first_seen)[1:]  # as Probe.latencies counts them
    latencies = probe.latencies()
    timed = [(probe.first_seen[s][0], lat) for s, lat in zip(sequences, latencies, strict=True)]
    before = [lat for at, lat in timed if at < attack_start]
    during = [lat for at, lat in timed if attack_start <= at < attack_end]
    first_cuts = [t - attack_start for t in slow.cut_at]
    print(
        json.dumps(
            {
                "slow_connections": args.slow,
                "slow_opened": slow.opened,
                "slow_cut": len(slow.lifetimes),
                "cut_after_s": {
                    "min": round(min(slow.lifetimes), 2) if slow.lifetimes else None,
                    **summary(slow.lifetimes),
                },
                "first_cut_after_attack_start_s": round(min(first_cuts), 2) if first_cuts else None,
                **burst_result,
                "publisher_alive": publisher_alive,
                "segments_before": len(before),
                "latency_before_s": summary(before),
                "segments_during": len(during),
                "latency_during_s": summary(during),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
