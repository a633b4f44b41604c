"""`nebula-live up`: the whole stack in the foreground, supervised, stopped as one.

Embedded services start only where no URL is configured; then migrations run, then the
API, ingest and worker processes start as children running their own subcommands, exactly
as they would under docker compose.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.retry import retry
from core.settings import Settings, retention_off_warning
from core.storage import ObjectStore
from core.webhooks import unsigned_webhooks_warning
from nebula_live import embedded
from nebula_live.embedded import EmbeddedServiceError, wait_until
from nebula_live.private_files import kept_secret
from nebula_live.processes import ManagedProcess, stop_together
from nebula_live.worker_pools import WorkerPool

HEALTH_TIMEOUT_SECONDS = 90.0
# From SIGTERM to the last process gone: our services get the first six seconds, all at once,
# the stores the rest; whatever is still alive then is killed.
STOP_SECONDS = 9.0
SERVICES_STOP_SECONDS = 6.0
# The children and their `nebula-live` arguments: the worker pools apart, as under compose,
# and the API and ingest processes, as many as `NEBULA_API_PROCESSES` and
# `NEBULA_INGEST_PROCESSES` say (`shared_port_children`).
CHILDREN = {
    "worker-live": ["worker", "--pool", WorkerPool.LIVE.value],
    "worker": ["worker", "--pool", WorkerPool.BATCH.value],
}


def shared_port_children(name: str, count: int) -> dict[str, dict[str, str]]:
    """`count` processes of service `name` by process name, with what their environment
    adds: several share their ports (SO_REUSEPORT), and the kernel deals them connections."""
    if count == 1:
        return {name: {}}
    return {f"{name}-{n}": {"NEBULA_REUSE_PORT": "true"} for n in range(1, count + 1)}


def _listens(ingest: ManagedProcess, rtmp_port: int, srt_port: int) -> bool:
    return ingest.listens_on("tcp", rtmp_port) and ingest.listens_on("udp", srt_port)


def api_token_path(settings: Settings) -> Path:
    return settings.data_dir / "api_token"


def kept_api_token(settings: Settings) -> str | None:
    """The configured token, or the one `up` kept in the data dir; None when neither exists."""
    if settings.api_token:
        return settings.api_token
    path = api_token_path(settings)
    return path.read_text().strip() if path.exists() else None


def api_token(settings: Settings) -> str:
    """The configured token, or one generated on first run and kept in the data dir."""
    return settings.api_token or kept_secret(api_token_path(settings), 32)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Stack:
    settings: Settings
    say: Callable[[str], None] = print
    demo: bool = False
    processes: list[ManagedProcess] = field(default_factory=list)
    stores: list[ManagedProcess] = field(default_factory=list)  # the embedded ones

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> Settings:
        """Bring everything up; returns the settings the children run with."""
        s = self.settings
        s.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if s.data_dir.stat().st_uid == os.geteuid():
            s.data_dir.chmod(0o700)  # its secrets are 0600 too; its logs name streams
        overrides: dict[str, object] = {"data_dir": s.data_dir, "api_token": api_token(s)}
        if not s.database_url:
            service = embedded.start_postgres(s.data_dir, self.log_dir, s.embedded_postgres_port)
            self._adopt(service.process, "PostgreSQL (embedded)", service.url)
            overrides["database_url"] = service.url
        if not s.redis_url:
            service = embedded.start_redis(s.data_dir, self.log_dir, s.embedded_redis_port)
            self._adopt(service.process, "Redis (embedded)", service.url)
            overrides["redis_url"] = service.url
        if not s.s3_endpoint:
            secret = s.s3_secret_key or embedded.s3_secret(s.data_dir)
            service = embedded.start_s3(
                s.data_dir, self.log_dir, s.embedded_s3_port, s.s3_access_key, secret
            )
            self._adopt(service.process, "S3 store (embedded SeaweedFS)", service.url)
            overrides["s3_endpoint"] = service.url
            overrides["s3_secret_key"] = secret
        resolved = s.model_copy(update=overrides)
        self._migrate_and_prepare(resolved)
        env = dict(os.environ)
        env.update({f"NEBULA_{k.upper()}": str(v) for k, v in overrides.items()})
        children = {}
        ingests = shared_port_children("ingest", resolved.ingest_processes)
        apis = shared_port_children("api", resolved.api_processes)
        commands = {**CHILDREN, **{name: ["ingest"] for name in ingests}}
        commands.update({name: ["api"] for name in apis})
        for name, command in commands.items():
            children[name] = ManagedProcess(
                name,
                [sys.executable, "-m", "nebula_live.cli", *command],
                self.log_dir / f"{name}.log",
                env={**env, **ingests.get(name, {}), **apis.get(name, {})},
            )
            children[name].start()
            self.processes.append(children[name])
        for child in (children[name] for name in ingests):  # the first opens the ports
            wait_until(partial(_listens, child, resolved.rtmp_port, resolved.srt_port), child)
        self.say(
            f"  ✔ ingest     RTMP listening on port {resolved.rtmp_port}, "
            f"SRT on UDP port {resolved.srt_port}"
            + (f" ({len(ingests)} processes sharing them)" if len(ingests) > 1 else "")
        )
        for child in (children[name] for name in apis):
            wait_until(partial(child.listens_on, "tcp", resolved.http_port), child)
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{resolved.http_port}/healthz"),
            children[next(iter(apis))],
            timeout=HEALTH_TIMEOUT_SECONDS,
        )
        self.say(
            f"  ✔ api        {resolved.public_http_url} (database, redis, storage, worker: ok)"
            + (f" ({len(apis)} processes)" if len(apis) > 1 else "")
        )
        self.say(
            f"  ✔ workers    {resolved.live_workers} Celery process(es) for the live ladder, "
            f"{resolved.workers} for uploads and housekeeping"
        )
        if self.demo:
            self._start_demo(resolved)
        return resolved

    def _start_demo(self, settings: Settings) -> None:
        from nebula_live.demo import demo_publisher, demo_stream

        stream_id, key = demo_stream(settings)
        try:
            publisher = demo_publisher(settings, key, self.log_dir)
        except FileNotFoundError as missing:
            self.say(f"  ✘ demo       {missing}")
            return
        publisher.start()
        self.processes.append(publisher)
        self.say(f"  ✔ demo       {settings.public_http_url}/hls/{stream_id}/master.m3u8")

    def _adopt(self, process: ManagedProcess, label: str, url: str) -> None:
        self.processes.append(process)
        self.stores.append(process)
        self.say(f"  ✔ {label:<32} {_without_password(url)}")

    def _migrate_and_prepare(self, settings: Settings) -> None:
        from core.migrate import upgrade

        upgrade(settings.database_url)
        self.say("  ✔ database schema up to date")
        store = ObjectStore.from_settings(settings)
        # A just-started store may need a moment.
        retry(
            lambda: store.ensure_bucket(settings.playback_cors_origin_list),
            timeout=30,
            base_delay=0.5,
            max_delay=0.5,
        )

    def failed_process(self) -> ManagedProcess | None:
        return next((p for p in self.processes if p.exit_code() is not None), None)

    def stop(self) -> None:
        """Our services first, all at once (the ingest stores what publishers sent), then the
        stores they write to: every process is gone within STOP_SECONDS of the signal."""
        services = [p for p in self.processes if p not in self.stores]
        stop_together(services, SERVICES_STOP_SECONDS)
        stop_together(self.stores, STOP_SECONDS - SERVICES_STOP_SECONDS)
        self.processes.clear()
        self.stores.clear()


class _Stop(Exception):
    pass


def run_up(settings: Settings, *, demo: bool = False, say: Callable[[str], None] = print) -> int:
    """Run until Ctrl-C or SIGTERM; returns the exit code."""

    def on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = Stack(settings, say, demo)
    started = time.monotonic()
    say("nebula-live is starting…")
    try:
        resolved = stack.start()
        say(f"ready in {time.monotonic() - started:.1f} s\n")
        say(_banner(resolved, token_in_env=settings.api_token is not None))
        while True:
            failed = stack.failed_process()
            if failed:
                say(
                    f"✘ {failed.name} exited with code {failed.exit_code()}; stopping.\n"
                    f"last lines of {failed.log_path}:\n{failed.log_tail()}"
                )
                return 1
            time.sleep(0.5)
    except _Stop as stop:
        say(f"\n{stop} received: stopping every process…")
        return 0
    except EmbeddedServiceError as exc:
        say(f"✘ {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        say("stopped.")


def _without_password(url: str) -> str:
    """The URL to print: an embedded store's password stays in its file in the data dir."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _banner(s: Settings, *, token_in_env: bool) -> str:
    """What to do next. A token `up` generated is printed, as DESIGN.md's contract has it
    (a first run needs it at hand), with the file that keeps it; one the operator set in
    NEBULA_API_TOKEN is named by the variable only, so production logs never hold it."""
    base = s.public_http_url
    if token_in_env:
        where, token = "in NEBULA_API_TOKEN", "$NEBULA_API_TOKEN"
    else:
        where, token = f"{s.api_token}  (kept in {api_token_path(s).resolve()})", s.api_token
    lines = [
        f"  Admin API token   {where}",
        f"  Player            {base}/player",
        f"  API docs          {base}/docs",
        f"  OBS server        rtmp://{s.public_host}:{s.rtmp_port}/live",
        "  OBS stream key    create one with: curl -X POST "
        f"-H \"Authorization: Bearer {token}\" -H 'Content-Type: application/json' "
        f'-d \'{{"name":"my stream"}}\' {base}/api/v1/streams',
        f"  SRT (ffmpeg, OBS) srt://{s.public_host}:{s.srt_port}"
        "?streamid=#!::r=live/STREAM_KEY,m=publish",
        f"  Logs              {s.data_dir / 'logs'}",
    ]
    for warning in (retention_off_warning(s), unsigned_webhooks_warning(s)):
        if warning:
            lines.append(f"  ⚠ {warning}")
    return "\n".join([*lines, "", "Press Ctrl-C to stop."])
