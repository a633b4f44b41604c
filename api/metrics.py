"""Prometheus metrics of the API process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

registry = CollectorRegistry(auto_describe=True)

http_requests = Counter(
    "nebula_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
)
http_seconds = Histogram(
    "nebula_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
)


async def record_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count every request under its route template, so ids do not explode the label set."""
    started = time.perf_counter()
    response = await call_next(request)
    template = route_template(request)
    http_requests.labels(request.method, template, str(response.status_code)).inc()
    http_seconds.labels(request.method, template).observe(time.perf_counter() - started)
    return response


def route_template(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return getattr(route, "path", "unmatched")
    return "unmatched"
