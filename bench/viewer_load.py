#!/usr/bin/env python3
"""Viewers at player cadence against `nebula-live up`: what the API answers, how fast, and
for how much CPU.

`up` runs in a throwaway data dir with `--api-processes` API processes. `--streams` streams
(the source only, no ladder) are published by `ffmpeg -re` looping a 360p source; once each
lists segments, `--viewers` viewers spread evenly over them play for `--seconds`, from
`--clients` load processes of asyncio keep-alive HTTP/1.1 connections (one per viewer, a
client of our own: the load has to fit beside the stack on this machine). Each viewer does
what an HLS player does at the live edge: its stream's media playlist once per target
duration (2 s) and, with `--segments`, every segment it has not fetched yet. Printed as
JSON, per viewer count (`--viewers 500,2000,5000` runs each in turn on the same stack):

  * playlist requests: count, failures (not 200, or the connection lost), latency p50, p99
    and max (request written to body read);
  * segments: count, MB/s, latency p50 and p99;
  * API CPU: cores used over the run (user + system of every API process), and viewers per
    API core; the load clients' cores too.

  python bench/viewer_load.py --viewers 500,2000,5000 --streams 10 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stack import BenchStack, running_stack  # noqa: E402
from tests.media import make_source, publish  # noqa: E402

TARGET_SECONDS = 2.0
SOURCE = Path(tempfile.gettempdir()) / "nebula-bench-viewers-360p.flv"
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_URI = re.compile(rb"^[^#\s].*$", re.MULTILINE)


@dataclass
class Tally:
    playlist: list[float] = field(default_factory=list)
    segment: list[float] = field(default_factory=list)
    segment_bytes: int = 0
    failures: int = 0


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = _CONTENT_LENGTH.search(head)
    if length is not None:
        return status, await reader.readexactly(int(length.group(1)))
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):  # chunked
        body += await reader.readexactly(size + 2)
    await reader.readuntil(b"\r\n")
    return status, body


async def _viewer(port: int, playlist: str, until: float, segments: bool, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    base = playlist.rsplit("/", 1)[0] + "/"
    await asyncio.sleep(random.uniform(0, TARGET_SECONDS))  # players do not poll in step
    connection = None
    fetched: set[bytes] = set()
    while loop.time() < until:
        started = loop.time()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            status, body = await _get(*connection, playlist)
            tally.playlist.append(loop.time() - started)
            if status != 200:
                tally.failures += 1
            elif segments:
                for uri in _URI.findall(body)[-3:]:
                    if uri not in fetched:
                        fetched.add(uri)
                        begun = loop.time()
                        status, data = await _get(*connection, base + uri.decode())
                        tally.segment.append(loop.time() - begun)
                        tally.segment_bytes += len(data)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.failures += 1
            if connection is not None:
                connection[1].close()
            connection = None
        await asyncio.sleep(max(0.0, TARGET_SECONDS - (loop.time() - started)))
    if connection is not None:
        connection[1].close()


def _client(job: tuple[int, list[str], float, bool]) -> tuple[Tally, float]:
    """One load process: its viewers until the run's end; its tally and CPU seconds."""
    port, playlists, seconds, segments = job

    async def run() -> Tally:
        tally = Tally()
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(_viewer(port, p, until, segments, tally) for p in playlists))
        return tally

    tally = asyncio.run(run())
    cpu = psutil.Process().cpu_times()
    return tally, cpu.user + cpu.system


def _api_processes(stack: BenchStack) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(stack.pid).children(recursive=True) if p.cmdline()[-1:] == ["api"]
    ]


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000, 1)


def run_viewers(
    stack: BenchStack, streams: list[dict], viewers: int, args: argparse.Namespace
) -> dict:
    port = int(stack.base_url.rsplit(":", 1)[1])
    playlists = [
        f"/hls/{streams[n % len(streams)]['id']}/source/index.m3u8" for n in range(viewers)
    ]
    jobs = [
        (port, playlists[c :: args.clients], args.seconds, args.segments)
        for c in range(args.clients)
    ]
    apis = _api_processes(stack)
    api_before, started = _cpu(apis), time.monotonic()
    with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
        results = pool.map(_client, jobs)
    wall = time.monotonic() - started
    api_cores = (_cpu(apis) - api_before) / wall
    playlist = [x for tally, _ in results for x in tally.playlist]
    segment = [x for tally, _ in results for x in tally.segment]
    return {
        "viewers": viewers,
        "streams": len(streams),
        "api_processes": len(apis),
        "seconds": round(wall, 1),
        "playlist_requests": len(playlist),
        "failures": sum(tally.failures for tally, _ in results),
        "playlist_ms": {
            "p50": _percentile(playlist, 0.5),
            "p99": _percentile(playlist, 0.99),
            "max": _percentile(playlist, 1.0),
        },
        "segments": len(segment),
        "segment_mb_per_s": round(sum(t.segment_bytes for t, _ in results) / wall / 1e6, 1),
        "segment_ms": {"p50": _percentile(segment, 0.5), "p99": _percentile(segment, 0.99)},
        "api_cores": round(api_cores, 2),
        "viewers_per_api_core": round(viewers / api_cores) if api_cores else None,
        "client_cores": round(sum(cpu for _, cpu in results) / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", default="5000", help="comma-separated viewer counts")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=2, help="load processes")
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--segments", action="store_true", help="fetch every segment too")
    args = parser.parse_args()
    make_source(SOURCE, seconds=20, size="640x360", video_bitrate="400k")
    env = {"NEBULA_API_PROCESSES": str(args.api_processes)}
    with running_stack(env=env) as stack:
        streams = [stack.create_stream(f"viewers {n}", ladder=[]) for n in range(args.streams)]
        rtmp = f"rtmp://127.0.0.1:{stack.rtmp_port}/live"
        publishers = [publish(SOURCE, f"{rtmp}/{s['stream_key']}", loop=True) for s in streams]
        try:
            time.sleep(3 * TARGET_SECONDS + 2)  # a few segments listed in each
            for viewers in (int(v) for v in args.viewers.split(",")):
                print(json.dumps(run_viewers(stack, streams, viewers, args)), flush=True)
        finally:
            for publisher in publishers:
                publisher.kill()
                publisher.wait(10)


if __name__ == "__main__":
    main()
