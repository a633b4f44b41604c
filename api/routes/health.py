"""Liveness of every component, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.health import check_all
from api.metrics import registry

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Each component's state; 200 only when all are up")
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    results = await run_in_threadpool(
        check_all, state.settings.database_url, state.redis, state.store, state.celery
    )
    failing = [r.name for r in results if not r.ok]
    body = {
        "status": "ok" if not failing else "unavailable",
        "failing": failing,
        "components": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
    }
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/metrics", summary="Prometheus metrics")
def metrics() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
