"""A request that needs a service that is away (PostgreSQL, Redis, the object store) gets a
503 with Retry-After, not a 500: nothing is wrong with what the client sent, and the same
request succeeds once the service is back (a database restart takes seconds). Routes that
must say more (an upload's enqueue, a stream delete) still answer their own 503 first."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from core.retry import PERMANENT_ERRORS, TRANSIENT_ERRORS

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2


async def service_unavailable(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PERMANENT_ERRORS):
        raise exc  # a missing object a route did not answer for: a bug, the 500 it was
    log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse(
        {
            "detail": f"a service this request needs is unavailable ({type(exc).__name__}); "
            "try again"
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def answer_unavailable_services(app: FastAPI) -> None:
    for kind in TRANSIENT_ERRORS:
        app.add_exception_handler(kind, service_unavailable)
