"""/healthz reports every component; /metrics speaks Prometheus; /docs serves OpenAPI."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from redis import Redis

from api.app import create_app
from core.settings import Settings
from ingest.spool import REPORT_PREFIX, Spool
from tests.media import bare_segment, spool_record
from tests.services import s3_server

ADMIN = {"Authorization": "Bearer test-token"}


def test_healthz_is_200_when_every_component_is_up(settings: Settings, celery_worker: None) -> None:
    with TestClient(create_app(settings)) as client:
        client.app.state.store.ensure_bucket()
        response = client.get("/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"database", "redis", "storage", "worker", "ingest_spool"}
    assert all(c["ok"] for c in body["components"].values())


def test_only_the_admin_token_holder_sees_what_failed_and_where(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"s3_endpoint": "127.0.0.1:9", "s3_bucket": "secretbucket"}
    )
    with TestClient(create_app(unreachable)) as client:
        public = client.get("/healthz")
        wrong = client.get("/healthz", headers={"Authorization": "Bearer not-the-token"})
        admin = client.get("/healthz", headers=ADMIN)
    assert public.status_code == admin.status_code == 503
    assert public.json() == wrong.json()
    assert public.json()["components"]["storage"] == {"ok": False}
    assert "127.0.0.1" not in public.text and "detail" not in public.text
    assert "port=9" in admin.json()["components"]["storage"]["detail"]
    assert admin.json()["failing"] == public.json()["failing"]


def test_a_result_is_kept_for_the_cache_time_so_callers_do_not_each_check(
    settings: Settings, celery_worker: None
) -> None:
    with s3_server() as s3:
        own = settings.model_copy(
            update={"s3_endpoint": s3.endpoint, "s3_secret_key": s3.secret_key}
        )
        with TestClient(create_app(own)) as client:
            client.app.state.store.ensure_bucket()
            assert client.get("/healthz").status_code == 200
            s3.stop()
            # Within NEBULA_HEALTH_CACHE_SECONDS (5 s): the kept result, no new check.
            assert client.get("/healthz").status_code == 200


def test_livez_answers_without_touching_any_component(settings: Settings) -> None:
    nowhere = settings.model_copy(
        update={
            "database_url": "postgresql://nobody@127.0.0.1:9/none",
            "s3_endpoint": "127.0.0.1:9",
        }
    )
    with TestClient(create_app(nowhere)) as client:
        response = client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_503_naming_storage_when_the_s3_server_stops(
    settings: Settings, celery_worker: None
) -> None:
    with s3_server() as s3:
        own = settings.model_copy(
            update={
                "s3_endpoint": s3.endpoint,
                "s3_secret_key": s3.secret_key,
                "health_cache_seconds": 0,
            }
        )
        with TestClient(create_app(own)) as client:
            client.app.state.store.ensure_bucket()
            assert client.get("/healthz").status_code == 200
            s3.stop()
            response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["storage"]
    assert body["components"]["storage"]["ok"] is False
    assert body["components"]["database"]["ok"] is True


def test_healthz_is_503_naming_the_worker_when_none_answers(settings: Settings) -> None:
    base, db = settings.redis_url.rsplit("/", 1)
    lonely = settings.model_copy(update={"redis_url": f"{base}/{int(db) % 15 + 1}"})
    with TestClient(create_app(lonely)) as client:
        client.app.state.store.ensure_bucket()
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["worker"]


def test_metrics_are_prometheus_text_counting_requests(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        client.get("/docs")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'nebula_http_requests_total{method="GET",route="/docs",status="200"}' in response.text


def test_openapi_documents_the_health_endpoint(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 200
        assert "/healthz" in client.get("/openapi.json").json()["paths"]


def test_a_full_ingest_spool_shows_in_healthz_and_metrics(
    settings: Settings, celery_worker: None, tmp_path: Path
) -> None:
    redis = Redis.from_url(settings.redis_url)
    spool = Spool(tmp_path / "spool", max_bytes=100)
    spool.report(redis, "ingest-a:1")
    Spool(tmp_path / "other", max_bytes=10**9).report(redis, "ingest-b:2")
    spool.put(spool_record(bare_segment(1), uuid.uuid4()), b"x" * 150)
    spool.report(redis, "ingest-a:1")
    try:
        with TestClient(create_app(settings)) as client:
            client.app.state.store.ensure_bucket()
            health = client.get("/healthz", headers=ADMIN)
            metrics = client.get("/metrics").text
    finally:
        redis.delete(f"{REPORT_PREFIX}ingest-a:1", f"{REPORT_PREFIX}ingest-b:2")
        redis.close()
    assert health.status_code == 503
    assert health.json()["failing"] == ["ingest_spool"]
    detail = health.json()["components"]["ingest_spool"]["detail"]
    assert "new publishes refused: ingest-a:1 (0 MiB)" in detail
    assert 'nebula_ingest_spool_full{ingest="ingest-a:1"} 1.0' in metrics
    assert 'nebula_ingest_spool_full{ingest="ingest-b:2"} 0.0' in metrics
    assert 'nebula_ingest_spool_bytes{ingest="ingest-a:1"} 150.0' in metrics
    assert 'nebula_ingest_spool_segments{ingest="ingest-a:1"} 1.0' in metrics
    assert 'nebula_ingest_spool_unplaced_segments{ingest="ingest-a:1"} 0.0' in metrics
