#!/usr/bin/env python3
"""Ingest under load: nebula-live and nginx-rtmp, side by side, measured the same way.

For each server: N concurrent `ffmpeg -re -c copy` publishers of a 6 Mbit/s 1080p30 source
(RTMP; with `--protocol srt`, MPEG-TS over SRT to nebula-live, which nginx-rtmp cannot take);
a few of them are probes whose media playlist is polled every 20 ms. Printed per server:
  * segment publish latency: when a segment is first listed in the playlist, minus when
    the publisher sent the keyframe that closed it (ffmpeg's -progress clock maps media
    time to wall time), p50 and max;
  * server CPU seconds per stream-minute (all processes of the ingest, from /proc);
  * publishers that failed.

  python bench/rtmp_ingest_load.py --streams 1 60 --seconds 40 [--no-nginx]
  python bench/rtmp_ingest_load.py --protocol srt --streams 1 60 --seconds 40

nebula-live runs as `nebula-live up` in a temporary data dir (embedded stores), so the
figure for "ingest" is the `nebula-live ingest` process alone; the stores' and the API's
CPU are printed beside it. nginx-rtmp needs `apt-get install nginx libnginx-mod-rtmp`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stack import running_stack  # noqa: E402
from nebula_live.processes import process_tree  # noqa: E402

NGINX_CONF = REPO.parent / "shared" / "bench" / "nginx-rtmp.conf.in"
SOURCE_CMD = (
    "ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi "
    "-i sine=frequency=440:sample_rate=48000 -t {seconds} -c:v libx264 -preset veryfast "
    "-b:v 6M -maxrate 6M -bufsize 12M -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p "
    "-profile:v high -c:a aac -b:a 128k -ar 48000 -ac 2 {out}"
)


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick
    return total


@dataclass
class Probe:
    playlist_url: str
    media_to_wall: list[float] = field(default_factory=list)
    first_seen: dict[int, tuple[float, float]] = field(default_factory=dict)

    def read_progress(self, stdout) -> None:
        for line in stdout:
            if line.startswith("out_time_us=") and line.strip()[12:].isdigit():
                us = int(line.strip()[12:])
                if us > 0:
                    self.media_to_wall.append(time.time() - us / 1e6)

    def poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                body = urllib.request.urlopen(self.playlist_url, timeout=2).read().decode()
            except Exception:  # noqa: BLE001 - not there yet
                body = ""
            now = time.time()
            found = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", body)
            first = int(found.group(1)) if found else 0
            durations = re.findall(r"#EXTINF:([0-9.]+)", body)
            for offset, duration in enumerate(durations):
                self.first_seen.setdefault(first + offset, (now, float(duration)))
            time.sleep(0.02)

    def latencies(self) -> list[float]:
        """Seen-at minus sent-at of each segment's end (the closing keyframe)."""
        if not self.media_to_wall or not self.first_seen:
            return []
        origin = min(self.media_to_wall)
        # Segments that slid out of the window before the first poll still count: estimate
        # them from the median duration seen (the benchmark source has a fixed GOP).
        first = min(self.first_seen)
        median = statistics.median(d for _, d in self.first_seen.values())
        out, media_end = [], first * median
        for index, sequence in enumerate(sorted(self.first_seen)):
            seen_at, duration = self.first_seen[sequence]
            media_end += duration
            if index:  # the first one may have been listed before polling began
                out.append(seen_at - (origin + media_end))
        return out


def run_load(
    source: Path,
    targets: list[tuple[str, str]],
    seconds: float,
    cpu_pids: dict[str, list[int]],
    container: str = "flv",
    muxer_args: tuple[str, ...] = (),
) -> dict:
    stop = threading.Event()
    publishers, threads, probes = [], [], []
    cpu_before = {name: cpu_seconds(pids) for name, pids in cpu_pids.items()}
    started = time.time()
    for index, (publish_url, playlist_url) in enumerate(targets):
        is_probe = index < 2
        extra = ["-progress", "pipe:1", "-stats_period", "0.1"] if is_probe else []
        proc = subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-i",
                str(source),
                "-c",
                "copy",
                *extra,
                *muxer_args,
                "-f",
                container,
                publish_url,
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.PIPE if is_probe else subprocess.DEVNULL,
            text=True,
        )
        publishers.append(proc)
        if is_probe:
            probe = Probe(playlist_url)
            probes.append(probe)
            for target, args in ((probe.read_progress, (proc.stdout,)), (probe.poll, (stop,))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                threads.append(thread)
    time.sleep(seconds)
    stop.set()
    failed = sum(1 for p in publishers if p.poll() not in (None, 0))
    elapsed = time.time() - started
    cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in cpu_pids.items()}
    for proc in publishers:
        proc.terminate()
    for proc in publishers:
        proc.wait()
    latencies = [value for probe in probes for value in probe.latencies()]
    streams = len(targets)
    return {
        "streams": streams,
        "failed_publishers": failed,
        "cpu_s_per_stream_min": {
            name: round(used / streams / (elapsed / 60), 3) for name, used in cpu.items()
        },
        "cpu_cores": {name: round(used / elapsed, 3) for name, used in cpu.items()},
        "segments_observed": len(latencies),
        "latency_s_p50": round(statistics.median(latencies), 3) if latencies else None,
        "latency_s_max": round(max(latencies), 3) if latencies else None,
    }


def pids_of(root: int, needle: str) -> list[int]:
    found = []
    for pid in process_tree(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline:
            found.append(pid)
    return found


def bench_nebula(
    source: Path, counts: list[int], seconds: float, protocol: str, muxer_args: tuple[str, ...]
) -> None:
    # Every publisher here comes from 127.0.0.1: the per-address cap (16 per ingest process)
    # would refuse most of them, as it refuses one address's flood.
    per_address = {"NEBULA_RTMP_MAX_CONNECTIONS_PER_IP": str(max(counts) + 8)}
    with running_stack(env=per_address) as stack:
        cpu_pids = {
            "ingest": pids_of(stack.pid, "nebula_live.cli ingest"),
            "api": pids_of(stack.pid, "nebula_live.cli api"),
            "stores": pids_of(stack.pid, "postgres")
            + pids_of(stack.pid, "weed")
            + pids_of(stack.pid, "redis-server"),
        }
        for count in counts:
            # Source only, like nginx-rtmp: this measures ingest, not the ladder's workers.
            streams = [stack.create_stream(f"bench {i}", ladder=[]) for i in range(count)]
            targets = [
                (s[f"{protocol}_url"], f"{stack.base_url}/hls/{s['id']}/source/index.m3u8")
                for s in streams
            ]
            container = "flv" if protocol == "rtmp" else "mpegts"
            result = run_load(source, targets, seconds, cpu_pids, container, muxer_args)
            labels = {"server": "nebula-live", "protocol": protocol}
            if muxer_args:
                labels["muxer_args"] = " ".join(muxer_args)
            print(json.dumps({**labels, **result}), flush=True)
            time.sleep(3)


def bench_nginx(source: Path, counts: list[int], seconds: float, conf: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="nginx-bench-"))
    (work / "hls").mkdir()
    (work / "logs").mkdir()
    work.chmod(0o755)
    (work / "hls").chmod(0o777)  # nginx workers run as www-data
    (work / "nginx.conf").write_text(conf.read_text().replace("__DIR__", str(work)))
    subprocess.run(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)], check=True)
    try:
        time.sleep(1)
        master = int((work / "nginx.pid").read_text())
        workers = [pid for pid in process_tree(master) if pid != master]
        for count in counts:
            # Names of this run's own: nginx-rtmp numbers a name's segments on from where its
            # last publish left off, and the probes count from the first (negative latencies).
            targets = [
                (
                    f"rtmp://127.0.0.1/live/bench{count}x{i}",
                    f"http://127.0.0.1:8089/hls/bench{count}x{i}/index.m3u8",
                )
                for i in range(count)
            ]
            result = run_load(source, targets, seconds, {"nginx": workers})
            print(json.dumps({"server": "nginx-rtmp", **result}), flush=True)
            time.sleep(3)
    finally:
        os.kill(int((work / "nginx.pid").read_text()), signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 60])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--source", type=Path, default=Path("/tmp/nebula-bench-src1080.flv"))
    parser.add_argument("--protocol", choices=["rtmp", "srt"], default="rtmp")
    parser.add_argument(
        "--muxer-args",
        default="",
        help="extra ffmpeg output options for our publishers, e.g. '-pes_payload_size 0'",
    )
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-nebula", action="store_true")
    parser.add_argument("--nginx-conf", type=Path, default=NGINX_CONF)
    args = parser.parse_args()
    if not args.source.exists():
        cmd = SOURCE_CMD.format(seconds=int(args.seconds + 20), out=args.source)
        subprocess.run(cmd.split(), check=True)
    if not args.no_nebula:
        bench_nebula(
            args.source, args.streams, args.seconds, args.protocol, tuple(args.muxer_args.split())
        )
    if not args.no_nginx and args.protocol == "rtmp":
        bench_nginx(args.source, args.streams, args.seconds, args.nginx_conf)


if __name__ == "__main__":
    main()
