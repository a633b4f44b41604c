"""The repository's load balancer configuration (deploy/ingest-lb.nginx.conf) with a real
nginx in front of two `nebula-live ingest` processes, as two ingest hosts would be: RTMP
and SRT publishers through it are recorded whole, the ingests see the publisher's address
through the PROXY protocol header, and a publisher whose ingest is SIGKILLed reconnects
through the balancer to the other one and continues its session."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession
from core.settings import Settings
from tests.conftest import ARTIFACTS
from tests.fixtures.rtmp.client_bytes import HANDSHAKE_SIZE, command, message_chunks, plain_c0c1
from tests.live_stack import LiveStack, free_udp_port
from tests.media import decode, make_source, make_ts_source, media_duration, publish, publish_ts
from tests.services import REPO_ROOT, free_port, nebula_process, settings_env, tcp_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
CONFIG = REPO_ROOT / "deploy" / "ingest-lb.nginx.conf"
DEBIAN_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
LOGS = [ARTIFACTS / "logs" / f"e2e-lb-ingest-{n}.log" for n in (1, 2)]


def nginx_config(rtmp_port: int, srt_port: int, ingests: list[Settings]) -> str:
    """The repository's configuration, listening on loopback ports of the test's and
    balancing over its ingests instead of the compose service."""
    text = CONFIG.read_text()
    text = text.replace("listen 1935;", f"listen 127.0.0.1:{rtmp_port};")
    text = text.replace("listen 9000 udp", f"listen 127.0.0.1:{srt_port} udp")
    for protocol, default in (("rtmp", 1935), ("srt", 9000)):
        line = re.search(rf"^\s*server ingest:{default} (.*);$", text, re.MULTILINE)
        assert line is not None, f"no {protocol} upstream server in {CONFIG}"
        servers = "\n".join(
            f"        server 127.0.0.1:{getattr(s, f'{protocol}_port')} {line.group(1)};"
            for s in ingests
        )
        text = text.replace(line.group(0), servers)
    return f"load_module {DEBIAN_STREAM_MODULE};\n" + text


@dataclass
class Balanced:
    rtmp_port: int  # nginx's
    srt_port: int
    ingests: list[Settings]
    processes: list[subprocess.Popen[bytes]]


@pytest.fixture
def balanced(live_stack: LiveStack, tmp_path: Path) -> Iterator[Balanced]:
    """Two ingests reached through nginx."""
    ingests = [
        live_stack.settings.model_copy(
            update={
                "rtmp_port": free_port(),
                "srt_port": free_udp_port(),
                "rtmp_proxy_protocol": True,
            }
        )
        for _ in LOGS
    ]
    rtmp_port, srt_port = free_port(), free_udp_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(rtmp_port, srt_port, ingests))
    with ExitStack() as stack:
        processes = [
            stack.enter_context(nebula_process("ingest", settings_env(own), log))
            for own, log in zip(ingests, LOGS, strict=True)
        ]
        for own in ingests:
            wait_for(lambda own=own: tcp_open(own.rtmp_port), 60, "an ingest")
        nginx = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(conf)]
            + ["-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log stderr info;"],
            stderr=open(ARTIFACTS / "logs" / "e2e-nginx.log", "ab"),  # noqa: SIM115
        )
        stack.callback(lambda: (nginx.terminate(), nginx.wait(10)))
        wait_for(lambda: tcp_open(rtmp_port), 30, "nginx")
        yield Balanced(rtmp_port, srt_port, ingests, processes)


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _logged_since(starts: list[int]) -> str:
    text = ""
    for path, start in zip(LOGS, starts, strict=True):
        with open(path, "rb") as log:
            log.seek(start)
            text += log.read().decode(errors="replace")
    return text


def _refused_publish_from(address: str, port: int) -> None:
    """A publish with a key nobody issued, from `address`, read until the server answers."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        connect = command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://lb/live"})
        sock.sendall(plain_c0c1() + bytes(HANDSHAKE_SIZE) + message_chunks(3, 20, connect))
        sock.sendall(message_chunks(3, 20, command("createStream", 2.0)))
        publish = command("publish", 3.0, None, "not-a-key-" + uuid.uuid4().hex, "live")
        sock.sendall(message_chunks(8, 20, publish, stream_id=1))
        while b"NetStream.Publish" not in (received := sock.recv(65536)) and received:
            pass


def test_publishers_through_the_balancer_are_recorded_and_fail_over_between_ingests(
    live_stack: LiveStack, balanced: Balanced, media_dir: Path
) -> None:
    rtmp_port, srt_port, ingests = balanced.rtmp_port, balanced.srt_port, balanced.processes
    starts = [_log_size(path) for path in LOGS]

    # Straight to an ingest, past the balancer: no PROXY header, closed.
    direct = LOGS[0].read_text().count("no PROXY protocol header")
    with socket.create_connection(("127.0.0.1", balanced.ingests[0].rtmp_port), 5) as sock:
        sock.sendall(plain_c0c1())
        sock.settimeout(10)
        assert sock.recv(65536) == b""
    wait_for(lambda: LOGS[0].read_text().count("no PROXY protocol header") > direct, 10, "log")

    # Through it, the ingest sees who the publisher is.
    _refused_publish_from("127.0.0.5", rtmp_port)
    wait_for(lambda: "('127.0.0.5'," in _logged_since(starts), 10, "the publisher's address")
    assert "publish refused" in _logged_since(starts)

    rtmp_source = make_source(media_dir / "lb-rtmp-8s.flv", seconds=8, size="640x360")
    srt_source = make_ts_source(media_dir / "lb-srt-8s.ts", seconds=8)
    streams = [live_stack.create_stream(f"balanced {n}", ladder=[]) for n in range(3)]
    publishers = [
        publish(rtmp_source, f"rtmp://127.0.0.1:{rtmp_port}/live/{s['stream_key']}")
        for s in streams[:2]
    ] + [
        publish_ts(
            srt_source,
            f"srt://127.0.0.1:{srt_port}?streamid=#!::r=live/{streams[2]['stream_key']},m=publish",
        )
    ]
    for publisher in publishers:
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    for stream, source in zip(streams, [rtmp_source, rtmp_source, srt_source], strict=True):
        wait_for(lambda s=stream: live_stack.session_statuses(s["id"]) == ["ended"], 60, "end")
        # The recording, not the stream URL: that one ends at the sweep after the session,
        # and ffmpeg reading it live in between starts three segments from its end.
        [session_id] = {session for session, _ in live_stack.source_rows(stream["id"])}
        errors, decoded = decode(
            f"{live_stack.api_url}/hls/sessions/{session_id}/source/index.m3u8"
        )
        assert errors == ""
        assert abs(decoded - media_duration(source)) <= 0.4

    # The ingest holding a publisher dies: the reconnect through the balancer lands on the
    # other one, which continues the session at once (the holder is a process of its host
    # that no longer runs).
    source = make_source(media_dir / "lb-failover-12s.flv", seconds=12, size="640x360")
    stream = live_stack.create_stream("balanced failover", ladder=[])
    url = f"rtmp://127.0.0.1:{rtmp_port}/live/{stream['stream_key']}"
    first = publish(source, url)
    wait_for(lambda: len(live_stack.source_rows(stream["id"])) >= 2, 30, "2 segments")
    holding = _holder_pid(live_stack, stream["id"])
    [doomed] = [p for p in ingests if p.pid == holding]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    first.wait(30)  # its connection broke
    again = publish(source, url)
    assert again.wait(60) == 0, again.stderr.read().decode()
    wait_for(lambda: live_stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")
    [session_id] = {session for session, _ in live_stack.source_rows(stream["id"])}
    [survivor] = [p for p in ingests if p is not doomed]
    assert _holder_pid(live_stack, stream["id"]) == survivor.pid
    errors, decoded = decode(f"{live_stack.api_url}/hls/sessions/{session_id}/source/index.m3u8")
    assert errors == ""
    assert decoded >= 12  # the whole second publish, and what the first stored


def _holder_pid(stack: LiveStack, stream_id: str) -> int:
    """The pid of the ingest process holding the stream's only session."""
    with session_scope(stack.settings.database_url) as db:
        [holder] = db.scalars(
            select(LiveSession.holder).where(LiveSession.stream_id == uuid.UUID(stream_id))
        ).all()
    return int(holder.split("/")[3])
