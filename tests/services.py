"""Real services for the test session: the machine's PostgreSQL and Redis, an S3 server we start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from celery import Celery

from core.retry import PollTimeout, poll
from core.settings import Settings
from core.storage import ObjectStore
from nebula_live import embedded

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(size: int) -> int:
    """The first of `size` consecutive free ports (the embedded S3 store needs eight)."""
    for _ in range(200):
        base = free_port()
        if base + size < 65535 and all(embedded.port_is_free(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports")


def remove_root_state(data: Path) -> None:
    """Remove what the embedded stores (run as root) kept for the data dir `data` outside
    it, under `nebula_live.embedded.SYSTEM_STATE_DIR`; nothing otherwise."""
    shutil.rmtree(embedded.system_state_home(data), ignore_errors=True)


def process_uids(pid: int, program: str | None = None) -> set[int]:
    """The real, effective, saved and filesystem uids of the processes in `pid`'s tree (of
    those whose command name is `program`, if given)."""
    from nebula_live.processes import process_tree

    uids: set[int] = set()
    for member in process_tree(pid):
        proc = Path(f"/proc/{member}")
        try:
            command = (proc / "comm").read_text().strip()
            status = (proc / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        if program is not None and command != program:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uids.update(int(uid) for uid in line.split()[1:])
    return uids


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir PostgreSQL's unprivileged user can enter (pytest's own are 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"nebula_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        from core.db import get_engine, session_factory

        get_engine.cache_clear()
        session_factory.cache_clear()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    service: embedded.RunningService

    def stop(self) -> None:
        self.service.process.stop()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    data = world_readable_tmpdir("nebula-s3-")
    secret = uuid.uuid4().hex
    service = embedded.start_s3(data, data / "logs", free_port_block(8), "nebula", secret)
    try:
        yield S3Server(service.url, "nebula", secret, service)
    finally:
        service.process.stop()
        remove_root_state(data)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server of our own (the embedded stack's), for processes that must not share
    the machine's: its URL."""
    data = world_readable_tmpdir("nebula-redis-")
    service = embedded.start_redis(data, data / "logs", free_port())
    try:
        yield service.url
    finally:
        service.process.stop()
        remove_root_state(data)
        shutil.rmtree(data, ignore_errors=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that hands `settings` to a child process, and nothing of ours else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"NEBULA_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        poll(check, timeout=timeout)
    except PollTimeout as exc:
        raise TimeoutError(f"{what} {exc}") from None


def tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextmanager
def nebula_process(
    command: str, env: Mapping[str, str], log_path: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `nebula-live COMMAND` as a child; stop it (and its children) when the block ends."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nebula_live.cli", command, *extra],
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        terminate_group(proc)


def wait_for_api(settings: Settings) -> None:
    base = f"http://127.0.0.1:{settings.http_port}"
    wait_for(lambda: http_status(f"{base}/docs") == 200, 60, "api")


@contextmanager
def api_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `nebula-live api` process (real uvicorn) for `settings`, once it serves."""
    with nebula_process("api", settings_env(settings), log_path) as proc:
        wait_for_api(settings)
        yield proc


@contextmanager
def running_api(settings: Settings, log_path: Path) -> Iterator[httpx.Client]:
    """A `nebula-live api` process for `settings` (its bucket made), and a client holding its
    admin token."""
    ObjectStore.from_settings(settings).ensure_bucket()
    base = f"http://127.0.0.1:{settings.http_port}"
    with api_process(settings, log_path):
        headers = {"Authorization": f"Bearer {settings.api_token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            yield client


def worker_pools(app: Celery) -> set[str]:
    """The pools answering a ping, by the prefix of their node names (`live`, `worker`)."""
    return {name.partition("-")[0] for reply in app.control.ping(timeout=1) for name in reply}


@contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `nebula-live worker` process for `settings`, both of its pools answering the ping."""
    from packager.celery_app import make_celery

    with nebula_process("worker", settings_env(settings), log_path) as proc:
        app = make_celery(settings.redis_url)
        wait_for(lambda: worker_pools(app) == {"live", "worker"}, 60, "celery worker pools")
        yield proc


def terminate_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str
    answered: int
    received_at: float  # time.monotonic()


class WebhookReceiver:
    """A local HTTP endpoint that records webhook deliveries and can refuse chosen ones once."""

    def __init__(self) -> None:
        import http.server
        import threading
        import time

        self.deliveries: list[Delivery] = []
        self._fail_once: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                answer = receiver._answer(body)
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(dict(self.headers), body, answer, time.monotonic())
                    )
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def fail_once(self, marker: str) -> None:
        """Answer 500 to the first delivery whose body contains `marker`."""
        with self._lock:
            self._fail_once.add(marker)

    def _answer(self, body: str) -> int:
        with self._lock:
            for marker in self._fail_once:
                if marker in body:
                    self._fail_once.discard(marker)
                    return 500
        return 200

    def containing(self, marker: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if marker in d.body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RequestRecorder:
    """A local HTTP server that answers every GET with 404 and records its path: whatever
    fetches a URL pointing here shows up in `hits`."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.hits: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                recorder.hits.append(self.path)
                self.send_response(404)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
