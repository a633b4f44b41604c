"""`nebula-live up` in a throwaway data dir, for benchmarks that need the whole stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.services import remove_root_state  # noqa: E402

HTTP_PORT = 18480
POSTGRES_PORT = 25480
REDIS_PORT = 26480
S3_PORT = 28480
RTMP_PORT = 11985


@dataclass(frozen=True)
class BenchStack:
    pid: int
    base_url: str
    token: str
    database_url: str
    redis_url: str
    data: Path

    def service_env(self, data_dir: Path, workers: int = 1) -> dict[str, str]:
        """The environment of one more `nebula-live` service process (a second worker host,
        say) against this stack's stores, as `up` gives its own children."""
        from nebula_live import embedded

        env = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
        env.update(
            NEBULA_DATA_DIR=str(data_dir),
            NEBULA_DATABASE_URL=self.database_url,
            NEBULA_REDIS_URL=self.redis_url,
            NEBULA_S3_ENDPOINT=f"http://127.0.0.1:{S3_PORT}",
            NEBULA_S3_SECRET_KEY=embedded.s3_secret(self.data),
            NEBULA_API_TOKEN=self.token,
            NEBULA_WORKERS=str(workers),
            NEBULA_LOG_LEVEL="WARNING",
            PYTHONPATH=str(REPO),
        )
        return env

    @property
    def rtmp_port(self) -> int:
        return RTMP_PORT

    def create_stream(self, name: str, ladder: list | None = None) -> dict:
        """A stream with the default ladder, or `ladder` ([]: the source only)."""
        body = {"name": name} if ladder is None else {"name": name, "ladder": ladder}
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/streams",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        return json.load(urllib.request.urlopen(request))


@contextmanager
def running_stack(
    workers: int = 1,
    log_level: str = "WARNING",
    data: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[BenchStack]:
    """Healthy stack for the block; a given data dir is kept, a temporary one removed.
    `env` adds settings (NEBULA_*) of the benchmark's."""
    keep = data is not None
    data = data or Path(tempfile.mkdtemp(prefix="nebula-bench-"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEBULA_")}
    environment.update(
        NEBULA_DATA_DIR=str(data),
        NEBULA_BIND_HOST="127.0.0.1",
        NEBULA_HTTP_PORT=str(HTTP_PORT),
        NEBULA_RTMP_PORT=str(RTMP_PORT),
        NEBULA_SRT_PORT="19480",
        NEBULA_EMBEDDED_POSTGRES_PORT=str(POSTGRES_PORT),
        NEBULA_EMBEDDED_REDIS_PORT=str(REDIS_PORT),
        NEBULA_EMBEDDED_S3_PORT=str(S3_PORT),
        NEBULA_WORKERS=str(workers),
        NEBULA_LOG_LEVEL=log_level,
    )
    environment.update(env or {})
    log = Path(tempfile.gettempdir()) / "nebula-bench-up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "nebula_live.cli", "up"],
            env=environment,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{HTTP_PORT}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{base}/healthz", timeout=3).status == 200:
                    break
            except Exception:  # noqa: BLE001 - still starting
                if time.time() > deadline or up.poll() is not None:
                    raise SystemExit(f"nebula-live up did not get healthy; see {log}") from None
                time.sleep(0.5)
        postgres, redis = (
            (data / name).read_text().strip() for name in ("postgres_password", "redis_password")
        )
        yield BenchStack(
            up.pid,
            base,
            (data / "api_token").read_text().strip(),
            f"postgresql://postgres:{postgres}@127.0.0.1:{POSTGRES_PORT}/nebula",
            f"redis://:{redis}@127.0.0.1:{REDIS_PORT}/0",
            data,
        )
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)
        if not keep:
            remove_root_state(data)
            shutil.rmtree(data, ignore_errors=True)
