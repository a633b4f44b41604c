"""Session-wide real services: the machine's PostgreSQL and Redis, an S3 server, a worker."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
import redis

from core.migrate import upgrade
from core.settings import Settings
from core.storage import ObjectStore
from tests.services import (
    ARTIFACTS,
    REDIS_BASE_URL,
    RequestRecorder,
    S3Server,
    WebhookReceiver,
    fresh_database,
    running_worker,
    s3_server,
)

# Settings come from the fixtures only; NEBULA_UPDATE_GOLDEN is the tests' own switch.
for _name in [n for n in os.environ if n.startswith("NEBULA_") and n != "NEBULA_UPDATE_GOLDEN"]:
    del os.environ[_name]


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis database of our own on the machine's server, emptied first.

    Chosen at random per run so that two runs on one machine do not consume each other's
    Celery tasks; database 0 is left to whatever else the machine runs.
    """
    db = int(os.environ.get("TEST_REDIS_DB", random.randint(1, 15)))
    url = f"{REDIS_BASE_URL}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def recording_server() -> Iterator[RequestRecorder]:
    """A local HTTP server that records what is fetched from it (nothing should be)."""
    recorder = RequestRecorder()
    yield recorder
    recorder.close()


WEBHOOK_SECRET = "test-webhook-secret"


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    redis_url: str,
    s3: S3Server,
    webhook_receiver: WebhookReceiver,
    tmp_path_factory,
) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        bind_host="127.0.0.1",
        database_url=database_url,
        redis_url=redis_url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_bucket="nebula-test",
        api_token="test-token",
        workers=2,
        live_workers=2,
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
    )


@pytest.fixture(scope="session")
def store(settings: Settings) -> ObjectStore:
    """The test bucket, created, through the same client the services use."""
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket(settings.playback_cors_origin_list)
    return store


@pytest.fixture(scope="session")
def celery_worker(settings: Settings) -> Iterator[None]:
    """A real `nebula-live worker` process (both of its pools) consuming from the test Redis."""
    with running_worker(settings, ARTIFACTS / "logs" / "worker.log"):
        yield
