"""Outgoing webhooks: what happened, as signed JSON, delivered by a Celery task with retries.

The signature header is `X-Nebula-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is the
HMAC-SHA256 of `"{t}.{body}"` under `NEBULA_WEBHOOK_SECRET`; binding the timestamp into the
signature lets a receiver refuse replays of an old delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from celery import Celery

from core.settings import Settings

log = logging.getLogger(__name__)

DELIVER_TASK = "nebula.deliver_webhook"
SIGNATURE_HEADER = "X-Nebula-Signature"
DELIVERY_TIMEOUT_SECONDS = 10.0


class WebhookEvent(StrEnum):
    STREAM_LIVE = "stream.live"
    STREAM_IDLE = "stream.idle"
    SESSION_ENDED = "session.ended"
    UPLOAD_READY = "upload.ready"
    UPLOAD_FAILED = "upload.failed"


def webhook_body(event: WebhookEvent, data: dict[str, Any]) -> str:
    """The JSON delivered; `id` stays the same across retries so receivers can deduplicate."""
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": event.value,
            "created_at": datetime.now(UTC).isoformat(),
            "data": data,
        },
        default=str,
    )


def sign(secret: str, timestamp: int, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str, body: str, tolerance_seconds: float = 300) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def unsigned_webhooks_warning(settings: Settings) -> str | None:
    """What to warn of at startup when webhooks would go out unsigned; None when they won't."""
    if settings.webhook_url and not settings.webhook_secret:
        return (
            "NEBULA_WEBHOOK_URL is set but NEBULA_WEBHOOK_SECRET is not: webhooks go out "
            "unsigned, and their receiver cannot tell them from forged ones"
        )
    return None


def enqueue_webhook(
    celery: Celery, settings: Settings, event: WebhookEvent, data: dict[str, Any]
) -> None:
    """Hand the event to a worker; never raises, an unreachable broker only costs the event."""
    if not settings.webhook_url:
        return
    try:
        celery.send_task(DELIVER_TASK, args=[webhook_body(event, data)])
    except Exception:  # noqa: BLE001 - a webhook must never break the live path
        log.exception("webhook %s could not be queued", event.value)


def post_webhook(url: str, secret: str | None, body: str) -> int:
    """POST the body once and return the HTTP status; raises on network errors."""
    headers = {"Content-Type": "application/json", "User-Agent": "nebula-live-webhooks"}
    event = json.loads(body)
    headers["X-Nebula-Event"] = event["type"]
    headers["X-Nebula-Delivery"] = event["id"]
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
    response = httpx.post(url, content=body, headers=headers, timeout=DELIVERY_TIMEOUT_SECONDS)
    return response.status_code
