"""Health of every component, a liveness check, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import IsAdmin, RedisDep
from api.health import HealthMonitor
from api.metrics import cache_registry, registry, spool_registry

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Each component's state; 200 only when all are up",
    description="Checked at most once per NEBULA_HEALTH_CACHE_SECONDS for every caller. "
    "Each component's `detail` (what failed, and where) only for the admin-token holder.",
)
async def healthz(request: Request, is_admin: IsAdmin) -> JSONResponse:
    monitor: HealthMonitor = request.app.state.health
    results = await monitor.current()
    failing = [r.name for r in results if not r.ok]
    body = {
        "status": "ok" if not failing else "unavailable",
        "failing": failing,
        "components": {
            r.name: {"ok": r.ok, "detail": r.detail} if is_admin else {"ok": r.ok} for r in results
        },
    }
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/livez", summary="The API process answers; touches no other component")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request, redis: RedisDep) -> Response:
    body = (
        generate_latest(registry)
        + generate_latest(spool_registry(redis))
        + generate_latest(
            cache_registry(request.app.state.playlist_cache, request.app.state.media_cache)
        )
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
