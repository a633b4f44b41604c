"""Component probes behind /healthz: each answers within a bounded time, up or with a reason.

`HealthMonitor` runs one check at a time for every caller and keeps its result a few seconds:
the worker ping alone waits out its whole timeout, so a check per request would let a public
caller tie up threads at will. The probes run on threads of the monitor's own, never in the
threadpool that the sync routes share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from celery import Celery
from redis import Redis
from sqlalchemy import text

from core.db import get_engine
from core.storage import ObjectStore
from ingest.spool import spool_reports

WORKER_PING_SECONDS = 1.5
# A probe still running after this is reported down; its thread is left to finish.
PROBE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    detail: str


def _probe(name: str, check: Callable[[], str]) -> ComponentHealth:
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - any failure means the component is down
        return ComponentHealth(name, False, f"{type(exc).__name__}: {exc}"[:300])
    return ComponentHealth(name, True, detail or "ok")


def check_database(database_url: str) -> str:
    with get_engine(database_url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def check_redis(redis: Redis) -> str:
    redis.ping()
    return "ok"


def check_storage(store: ObjectStore) -> str:
    store.check()
    return "ok"


def check_worker(celery: Celery) -> str:
    replies = celery.control.ping(timeout=WORKER_PING_SECONDS)
    if not replies:
        raise RuntimeError("no worker answered a ping")
    return f"{len(replies)} worker(s)"


def check_ingest_spools(redis: Redis) -> str:
    """Down while any ingest's spool is full (it refuses new publishes then)."""
    reports = spool_reports(redis)
    full = [
        f"{name} ({report['used_bytes'] / 2**20:.0f} MiB)"
        for name, report in reports.items()
        if report["full"]
    ]
    if full:
        raise RuntimeError(f"spool full, new publishes refused: {', '.join(sorted(full))}")
    waiting = sum(r["waiting"] for r in reports.values())
    return f"{len(reports)} ingest(s), {waiting} segment(s) waiting for storage"


def component_probes(
    database_url: str, redis: Redis, store: ObjectStore, celery: Celery
) -> dict[str, Callable[[], str]]:
    return {
        "database": lambda: check_database(database_url),
        "redis": lambda: check_redis(redis),
        "storage": lambda: check_storage(store),
        "worker": lambda: check_worker(celery),
        "ingest_spool": lambda: check_ingest_spools(redis),
    }


class HealthMonitor:
    """Every caller within `cache_seconds` of a finished check gets its result; callers
    while a check runs wait for that one."""

    def __init__(self, probes: dict[str, Callable[[], str]], cache_seconds: float) -> None:
        self.probes = probes
        self.cache_seconds = cache_seconds
        self._threads = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="health")
        self._last: tuple[float, list[ComponentHealth]] | None = None
        self._running: asyncio.Future[list[ComponentHealth]] | None = None

    async def current(self) -> list[ComponentHealth]:
        if self._last is not None and time.monotonic() - self._last[0] < self.cache_seconds:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
        # Shielded: a caller that goes away does not cancel the check the others wait for.
        return await asyncio.shield(self._running)

    async def _check(self) -> list[ComponentHealth]:
        try:
            results = await asyncio.gather(
                *(self._run(name, check) for name, check in self.probes.items())
            )
            self._last = (time.monotonic(), results)
            return results
        finally:
            self._running = None

    async def _run(self, name: str, check: Callable[[], str]) -> ComponentHealth:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._threads, _probe, name, check), PROBE_TIMEOUT_SECONDS
            )
        except TimeoutError:
            return ComponentHealth(name, False, f"no answer within {PROBE_TIMEOUT_SECONDS} s")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
