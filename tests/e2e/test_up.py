"""`nebula-live up` as a user runs it: no URLs set, embedded services, one command."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from nebula_live.embedded import STORE_SYSTEM_USER, SYSTEM_STATE_DIR
from nebula_live.processes import process_tree
from tests.hls_poller import CheckedHls
from tests.live_stack import free_udp_port
from tests.media import probe
from tests.services import (
    REPO_ROOT,
    free_port,
    free_port_block,
    process_uids,
    remove_root_state,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    # In a home only its owner enters (0700, as /root is): root's PostgreSQL runs as a
    # system user that could not reach a data dir in it.
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    env.update(
        NEBULA_DATA_DIR=str(home / "nebula-data"),
        NEBULA_BIND_HOST="127.0.0.1",
        NEBULA_HTTP_PORT=str(free_port()),
        NEBULA_RTMP_PORT=str(free_port()),
        NEBULA_SRT_PORT=str(free_udp_port()),
        NEBULA_EMBEDDED_POSTGRES_PORT=str(free_port()),
        NEBULA_EMBEDDED_REDIS_PORT=str(free_port()),
        NEBULA_EMBEDDED_S3_PORT=str(free_port_block(8)),
        NEBULA_WORKERS="1",
        # The defaults on this 2-core machine, said here.
        NEBULA_INGEST_PROCESSES="2",
        NEBULA_API_PROCESSES="2",
        PYTHONPATH=str(REPO_ROOT),
    )
    yield env
    remove_root_state(Path(env["NEBULA_DATA_DIR"]))


@contextmanager
def running_up(env: dict[str, str], log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nebula_live.cli", "up", *flags],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _healthy(base: str) -> bool:
    return httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_up_starts_everything_stops_cleanly_and_keeps_its_data(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{up_env['NEBULA_HTTP_PORT']}"
    log = tmp_path / "up.log"
    with running_up(up_env, log) as up:
        wait_for(lambda: _healthy(base), 150, "nebula-live up")
        # `up` prints its banner once its own health check passes, which may be after ours.
        wait_for(lambda: "Press Ctrl-C to stop." in log.read_text(), 30, "up's banner")
        output = log.read_text()
        for expected in ("PostgreSQL (embedded)", "Redis (embedded)", "S3 store", "ready in"):
            assert expected in output
        assert "(2 processes sharing them)" in output  # two ingests on one RTMP port
        assert re.search(r"✔ api .*\(2 processes\)", output)  # and two APIs on one HTTP port
        token_file = Path(up_env["NEBULA_DATA_DIR"]) / "api_token"
        token = token_file.read_text().strip()
        assert f"Admin API token   {token}  (kept in {token_file.resolve()})" in output
        assert f"rtmp://127.0.0.1:{up_env['NEBULA_RTMP_PORT']}/live" in output
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(f"{base}/api/v1/streams", json={"name": "kept"}, headers=headers)
        assert created.status_code == 201
        _assert_the_stores_are_private(up_env, output)
        if os.geteuid() == 0:
            user = pwd.getpwnam(STORE_SYSTEM_USER)
            for store in ("postgres", "redis-server", "weed"):
                assert process_uids(up.pid, store) == {user.pw_uid}, store
        children = process_tree(up.pid)
        assert len(children) >= 10  # up, postgres, redis, s3, 2 APIs, 2 ingests, 2 worker pools
        signalled = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        print(f"up stopped {time.monotonic() - signalled:.1f} s after SIGTERM")
    assert [pid for pid in children if _alive(pid)] == []
    assert "stopped." in log.read_text()

    with running_up(up_env, log, "--demo") as up:
        wait_for(lambda: _healthy(base), 150, "nebula-live up, second run")
        again = httpx.get(f"{base}/api/v1/streams/{created.json()['id']}", headers=headers)
        assert again.status_code == 200
        assert again.json()["name"] == "kept"
        # `up` announces the demo just after the stack turns healthy.
        demo_line = re.compile(r"demo\s+(http://\S+/master\.m3u8)")
        wait_for(lambda: demo_line.search(log.read_text()) is not None, 30, "the demo's URL")
        demo_url = demo_line.search(log.read_text()).group(1)
        with CheckedHls(base) as hls:
            wait_for(lambda: hls.get(demo_url).status_code == 200, 60, "demo stream playlist")
            assert probe(demo_url)["streams"][0]["codec_name"] == "h264"
        hls.assert_clean()
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0


def _assert_the_stores_are_private(env: dict[str, str], banner: str) -> None:
    """The data dir and every secret in it are the owner's alone, the embedded PostgreSQL
    and Redis refuse a client without the password, and the banner prints no password."""
    data = Path(env["NEBULA_DATA_DIR"])
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    secrets = [
        "api_token",
        "postgres_password",
        "redis_password",
        "redis_data/redis.conf",
        "s3_secret_key",
    ]
    for name in secrets:
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    for name in ("postgres_password", "redis_password"):
        assert (data / name).read_text().strip() not in banner, name
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{env['NEBULA_EMBEDDED_POSTGRES_PORT']}/nebula",
            connect_timeout=5,
        )
    with socket.create_connection(("127.0.0.1", int(env["NEBULA_EMBEDDED_REDIS_PORT"]))) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"-NOAUTH")
    if os.geteuid() == 0:  # the stores' state sits where their system user can reach it
        for store in ("postgres_data", "redis_data", "minio_storage"):
            assert (data / store).resolve().is_relative_to(SYSTEM_STATE_DIR), store


def test_up_exits_non_zero_naming_the_service_that_cannot_start(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(up_env["NEBULA_HTTP_PORT"])))
        squatter.listen()
        with running_up(up_env, log) as up:
            assert up.wait(150) == 1
    output = log.read_text()
    assert re.search(r"api(-\d)? exited with code", output)  # api-1, api-2 on two cores
    assert "address already in use" in output.lower()
