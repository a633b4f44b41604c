"""Component probes behind /healthz: each answers within a bounded time, up or with a reason."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from celery import Celery
from redis import Redis
from sqlalchemy import text

from core.db import get_engine
from core.storage import ObjectStore

WORKER_PING_SECONDS = 1.5


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


def check_all(
    database_url: str, redis: Redis, store: ObjectStore, celery: Celery
) -> list[ComponentHealth]:
    probes = {
        "database": lambda: check_database(database_url),
        "redis": lambda: check_redis(redis),
        "storage": lambda: check_storage(store),
        "worker": lambda: check_worker(celery),
    }
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = [pool.submit(_probe, name, check) for name, check in probes.items()]
        return [f.result() for f in futures]
