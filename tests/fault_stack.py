"""A whole stack to inject faults into: an ingest, an API and a Celery worker as processes,
against a PostgreSQL cluster and a Redis of its own that it can restart in place (same port,
same data dir), and the caller's S3 server, which the ingest reaches through a `NetworkCut`.

A plain context manager, no pytest, so the fault tests (tests/faults/) and bench scripts
share it. The stores are `nebula-live up`'s embedded ones (`nebula_live.embedded`). Call
the restarts from the thread that entered the block: the stores die with the thread that
started them (PR_SET_PDEATHSIG, `nebula_live.processes`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core.db import get_engine
from core.migrate import upgrade
from core.settings import Settings
from core.storage import ObjectStore
from nebula_live import embedded
from tests.live_stack import LiveStack, ingest_process, stack_settings
from tests.network_cut import NetworkCut
from tests.services import (
    S3Server,
    WebhookReceiver,
    api_process,
    free_port,
    remove_root_state,
    running_worker,
)

WEBHOOK_SECRET = "fault-stack-webhook-secret"
# What the stack's settings differ in unless `changes` say otherwise. The stream playlists
# end with the session (no hold). A rung segment still missing 0.4 targets after its source
# is listed as a GAP, swept every 0.25 s: a rung then never stands still for 1.5 targets
# (RFC 8216bis 6.2.1, which the HLS checker holds playlists to) however slow the machine's
# transcodes are, as in tests/e2e/test_players_through_faults.py; the late segment replaces
# the GAP in the recording.
FAULT_STACK_SETTINGS: dict[str, object] = {
    "presentation_hold_seconds": 0.0,
    "rung_deadline_targets": 0.4,
    "ladder_sweep_seconds": 0.25,
}


@dataclass
class EmbeddedStores:
    """PostgreSQL and Redis as `nebula-live up` runs them, with their state in `data_dir`,
    restartable on the same ports and data."""

    data_dir: Path
    logs: Path
    postgres: embedded.RunningService | None = None
    redis: embedded.RunningService | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = embedded.start_postgres(self.data_dir, self.logs, free_port())
        self.redis = embedded.start_redis(self.data_dir, self.logs, free_port())

    def restart_postgres(self, down_seconds: float) -> None:
        assert self.postgres is not None
        self.postgres.process.stop()
        time.sleep(down_seconds)
        self.postgres = embedded.start_postgres(self.data_dir, self.logs, _port(self.postgres))

    def restart_redis(self, down_seconds: float) -> None:
        assert self.redis is not None
        self.redis.process.stop()
        # As root the data dir holds a link to where Redis's user keeps it.
        shutil.rmtree((self.data_dir / "redis_data").resolve())
        time.sleep(down_seconds)
        self.redis = embedded.start_redis(self.data_dir, self.logs, _port(self.redis))

    def stop(self) -> None:
        for service in (self.redis, self.postgres):
            if service is not None:
                service.process.stop()
        if self.postgres is not None:
            get_engine(self.postgres.url).dispose()  # this process's pool of a gone server
        remove_root_state(self.data_dir)


@dataclass
class FaultStack(LiveStack):
    """`settings` are the API's and the worker's; the ingest's differ only in its S3
    endpoint, the `storage_cut` in front of the real one."""

    storage_cut: NetworkCut
    webhooks: WebhookReceiver
    ingest_settings: Settings
    stores: EmbeddedStores
    processes: ExitStack
    ingest: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None

    @property
    def ingest_pid(self) -> int:
        assert self.ingest is not None, "the ingest is not running"
        return self.ingest.pid

    @property
    def api_pid(self) -> int:
        assert self.api is not None, "the API is not running"
        return self.api.pid

    def restart_postgres(self, down_seconds: float) -> None:
        """Stop PostgreSQL ("fast": open transactions are rolled back, clients cut off), keep
        it down `down_seconds`, start it again on its port and cluster."""
        self.stores.restart_postgres(down_seconds)

    def restart_redis(self, down_seconds: float) -> None:
        """Stop Redis, throw away everything it kept on disk (the worst case: the Celery
        queues, the events, the locks, all gone), keep it down `down_seconds`, start it
        again, empty, on its port."""
        self.stores.restart_redis(down_seconds)

    def kill_ingest(self) -> None:
        """SIGKILL the ingest (and its process group): nothing of it gets to clean up."""
        _kill(self.ingest)
        self.ingest = None

    def start_ingest(self) -> None:
        """The ingest again, with the same settings (data dir, spool, ports)."""
        self.ingest = self.processes.enter_context(
            ingest_process(self.ingest_settings, self.stores.logs / "ingest.log")
        )

    def kill_worker(self) -> None:
        _kill(self.worker)
        self.worker = None

    def start_worker(self) -> None:
        """The worker again, with both pools answering the ping."""
        self.worker = self.processes.enter_context(
            running_worker(self.settings, self.stores.logs / "worker.log")
        )


def _port(service: embedded.RunningService) -> int:
    port = urlsplit(service.url).port
    assert port is not None
    return port


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    assert process is not None, "not running"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextmanager
def fault_stack(
    s3: S3Server,
    workdir: Path,
    changes: dict[str, object] | None = None,
    logs: Path | None = None,
) -> Iterator[FaultStack]:
    """The stack for the block; its processes are stopped and its stores' state is gone
    (as root the cluster lives under /var/lib/nebula-live: see `nebula_live.embedded`)
    when it ends. `workdir` keeps the services' data dir, and the logs unless `logs` says
    where. `changes` apply to every service's settings."""
    logs = logs or workdir / "logs"
    stores = EmbeddedStores(workdir / "stores", logs)
    with ExitStack() as exits:
        exits.callback(stores.stop)
        stores.start()
        assert stores.postgres is not None and stores.redis is not None
        upgrade(stores.postgres.url)
        webhooks = WebhookReceiver()
        exits.callback(webhooks.close)
        storage_cut = exits.enter_context(NetworkCut(urlsplit(s3.endpoint).port))
        settings = stack_settings(
            Settings(
                data_dir=workdir / "data",
                bind_host="127.0.0.1",
                database_url=stores.postgres.url,
                redis_url=stores.redis.url,
                s3_endpoint=s3.endpoint,
                s3_access_key=s3.access_key,
                s3_secret_key=s3.secret_key,
                s3_bucket="nebula-faults",
                api_token=uuid.uuid4().hex,
                workers=1,
                live_workers=2,
                webhook_url=webhooks.url,
                webhook_secret=WEBHOOK_SECRET,
            ),
            {**FAULT_STACK_SETTINGS, **(changes or {})},
        )
        ObjectStore.from_settings(settings).ensure_bucket(settings.playback_cors_origin_list)
        stack = FaultStack(
            settings=settings,
            storage_cut=storage_cut,
            webhooks=webhooks,
            ingest_settings=settings.model_copy(
                update={"s3_endpoint": f"http://127.0.0.1:{storage_cut.port}"}
            ),
            stores=stores,
            processes=exits.enter_context(ExitStack()),
        )
        stack.start_worker()
        stack.api = stack.processes.enter_context(api_process(settings, logs / "api.log"))
        stack.start_ingest()
        yield stack
