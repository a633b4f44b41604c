"""Two `nebula-live ingest` processes sharing the RTMP and SRT ports (SO_REUSEPORT), as `up`
runs one per core: the kernel deals connections to both, RTMP and SRT publishers on the
shared ports record whole sessions, and a process stopping leaves the port to the other.

Which process gets a connection is the kernel's hash, so the dealing is checked over many
connections: 40 idle RTMP connections (from as many loopback addresses, under the per-IP
cap) and 20 SRT callers with unknown keys, each rejected in the log of the process that
took it. Both processes getting none of one kind is 2^-39 and 2^-19 likely."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from core.settings import Settings
from core.stream_keys import new_stream_key
from tests.conftest import ARTIFACTS
from tests.live_stack import LiveStack, free_udp_port
from tests.media import decode, make_source, make_ts_source, media_duration, publish, publish_ts
from tests.services import free_port, nebula_process, settings_env, tcp_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
LOGS = [ARTIFACTS / "logs" / f"e2e-shared-ingest-{n}.log" for n in (1, 2)]


@pytest.fixture
def two_ingests(live_stack: LiveStack) -> Iterator[tuple[Settings, list[subprocess.Popen]]]:
    """Two ingests on ports of their own, both listening with SO_REUSEPORT."""
    shared = live_stack.settings.model_copy(
        update={"rtmp_port": free_port(), "srt_port": free_udp_port(), "reuse_port": True}
    )
    with ExitStack() as stack:
        processes = []
        for log in LOGS:
            start = log.stat().st_size if log.exists() else 0
            processes.append(
                stack.enter_context(nebula_process("ingest", settings_env(shared), log))
            )
            wait_for(lambda log=log, start=start: "SRT listening" in _log(log, start), 60, "ingest")
        yield shared, processes


def _log(path: Path, start: int = 0) -> str:
    with open(path, "rb") as log:
        log.seek(start)
        return log.read().decode(errors="replace")


def _established(process: subprocess.Popen, port: int) -> int:
    """The process's RTMP connections."""
    return sum(
        1
        for conn in psutil.Process(process.pid).net_connections(kind="tcp")
        if conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_two_ingests_share_the_ports_and_each_takes_publishers(
    live_stack: LiveStack,
    two_ingests: tuple[Settings, list[subprocess.Popen]],
    media_dir: Path,
) -> None:
    shared, processes = two_ingests
    idle = []
    for n in range(40):
        sock = socket.socket()
        sock.bind((f"127.0.{n // 250 + 2}.{n % 250 + 1}", 0))
        sock.connect(("127.0.0.1", shared.rtmp_port))
        idle.append(sock)
    try:
        wait_for(
            lambda: sum(_established(p, shared.rtmp_port) for p in processes) == 40, 10, "accepts"
        )
        dealt = [_established(p, shared.rtmp_port) for p in processes]
    finally:
        for sock in idle:
            sock.close()
    assert min(dealt) > 0, dealt

    starts = [LOGS[n].stat().st_size for n in (0, 1)]
    callers = [
        subprocess.Popen(
            [
                "srt-live-transmit",
                "file://con",
                f"srt://127.0.0.1:{shared.srt_port}?streamid="
                f"#!::r=live/{new_stream_key()},m=publish",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(20)
    ]

    def rejected() -> list[int]:
        return [_log(LOGS[n], starts[n]).count("unknown stream key") for n in (0, 1)]

    try:
        wait_for(lambda: sum(rejected()) >= len(callers), 30, "every SRT caller rejected")
    finally:
        for caller in callers:
            caller.kill()
            caller.wait(10)
    assert min(rejected()) > 0, rejected()

    # Real publishers on the shared ports, over both protocols, each recorded whole.
    rtmp_source = make_source(media_dir / "shared-rtmp-8s.flv", seconds=8, size="640x360")
    srt_source = make_ts_source(media_dir / "shared-srt-8s.ts", seconds=8)
    streams = [live_stack.create_stream(f"shared {n}", ladder=[]) for n in range(4)]
    publishers = [
        publish(rtmp_source, f"rtmp://127.0.0.1:{shared.rtmp_port}/live/{s['stream_key']}")
        for s in streams[:2]
    ] + [
        publish_ts(
            srt_source,
            f"srt://127.0.0.1:{shared.srt_port}?streamid=#!::r=live/{s['stream_key']},m=publish",
        )
        for s in streams[2:]
    ]
    for publisher in publishers:
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    for stream, source in zip(streams, [rtmp_source] * 2 + [srt_source] * 2, strict=True):
        wait_for(lambda s=stream: live_stack.session_statuses(s["id"]) == ["ended"], 60, "end")
        [session_id] = {session for session, _ in live_stack.source_rows(stream["id"])}
        errors, decoded = decode(
            f"{live_stack.api_url}/hls/sessions/{session_id}/source/index.m3u8"
        )
        assert errors == ""
        assert abs(decoded - media_duration(source)) <= 0.4

    # One process gone: the port stays open, and the other takes every new publisher.
    processes[0].terminate()
    processes[0].wait(30)
    assert tcp_open(shared.rtmp_port)
    stream = live_stack.create_stream("shared, one left", ladder=[])
    again = publish(rtmp_source, f"rtmp://127.0.0.1:{shared.rtmp_port}/live/{stream['stream_key']}")
    assert again.wait(60) == 0, again.stderr.read().decode()
    wait_for(lambda: live_stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")
