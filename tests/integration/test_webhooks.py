"""Webhooks from a real Celery worker to a local HTTP receiver."""

from __future__ import annotations

import json
import uuid

from core.settings import Settings
from core.webhooks import SIGNATURE_HEADER, WebhookEvent, enqueue_webhook, verify_signature
from packager.celery_app import make_celery
from tests.conftest import WEBHOOK_SECRET
from tests.services import WebhookReceiver, wait_for


def test_a_webhook_is_signed_and_retried_after_the_receiver_first_answers_500(
    celery_worker: None, settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    marker = str(uuid.uuid4())
    webhook_receiver.fail_once(marker)
    enqueue_webhook(
        make_celery(settings.redis_url), settings, WebhookEvent.UPLOAD_READY, {"upload_id": marker}
    )
    wait_for(lambda: len(webhook_receiver.containing(marker)) == 2, 30, "a retried delivery")
    refused, accepted = webhook_receiver.containing(marker)
    assert (refused.answered, accepted.answered) == (500, 200)
    assert refused.body == accepted.body
    event = json.loads(accepted.body)
    assert event["type"] == "upload.ready"
    assert event["data"] == {"upload_id": marker}
    assert accepted.headers["X-Nebula-Event"] == "upload.ready"
    assert accepted.headers["X-Nebula-Delivery"] == event["id"]
    for delivery in (refused, accepted):
        header = delivery.headers[SIGNATURE_HEADER]
        assert verify_signature(WEBHOOK_SECRET, header, delivery.body)
        assert not verify_signature("another secret", header, delivery.body)
        assert not verify_signature(WEBHOOK_SECRET, header, delivery.body + " ")


def test_without_a_webhook_url_nothing_is_queued(settings: Settings) -> None:
    class Refuses:
        def send_task(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("queued a webhook with no URL configured")

    quiet = settings.model_copy(update={"webhook_url": None})
    enqueue_webhook(Refuses(), quiet, WebhookEvent.STREAM_LIVE, {"stream_id": "x"})
