"""The production deployment files say what the README promises."""

from __future__ import annotations

import subprocess
import sys

import yaml

from core.settings import Settings
from tests.services import REPO_ROOT, settings_env

APP_SERVICES = {
    "api": ["api"],
    "ingest": ["ingest"],
    "worker-live": ["worker", "--pool", "live"],
    "worker": ["worker", "--pool", "batch"],
    "migrate": ["migrate"],
}


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_official_stores_and_our_services_from_one_image() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", *APP_SERVICES} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["minio"]["image"].startswith("minio/minio")
    for name, command in APP_SERVICES.items():
        service = services[name]
        assert service["build"] == "."
        assert service["command"] == command
        env = service["environment"]
        assert env["NEBULA_DATABASE_URL"].startswith("postgresql://")
        assert env["NEBULA_REDIS_URL"].startswith("redis://redis:")
        assert env["NEBULA_S3_ENDPOINT"] == "http://minio:9000"


def test_every_compose_subcommand_is_a_real_nebula_live_command() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["nebula-live"]' in dockerfile
    for command in APP_SERVICES.values():
        result = subprocess.run(
            [sys.executable, "-m", "nebula_live.cli", *command, "--help"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_migrate_prepares_the_schema_and_the_bucket(settings: Settings) -> None:
    own = settings.model_copy(update={"s3_bucket": "migrate-made-this"})
    result = subprocess.run(
        [sys.executable, "-m", "nebula_live.cli", "migrate"],
        env=settings_env(own),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "bucket 'migrate-made-this' is ready" in result.stdout
