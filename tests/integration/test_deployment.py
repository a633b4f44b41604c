"""The production deployment files say what the README promises: every secret required,
none written in, Redis's password in every URL, and only the TLS proxy and the ingest load
balancer published. docker-compose.yml is read as YAML and its `${...}` references resolved
the way compose resolves them."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest
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


# Every secret the deployment needs, each required (`${NAME:?message}`), with a value here.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-5e1a",
    "REDIS_PASSWORD": "redis-77c2",
    "MINIO_ROOT_PASSWORD": "minio-0b9f",
    "NEBULA_API_TOKEN": "token-3d4e",
}
OPERATOR_ENV = {**SECRETS, "NEBULA_PUBLIC_HOST": "live.example.com"}
_REFERENCE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class MissingVariableError(Exception):
    """A `${NAME:?message}` whose variable is unset: compose refuses to start."""


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _interpolate(value: object, env: Mapping[str, str]) -> object:
    """`value` (any YAML node) with `${NAME}`, `${NAME:-default}`, `${NAME:?message}` and
    `$$` resolved against `env`, as compose does."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        given = env.get(name)
        if operator in (":?", "?") and not given:
            raise MissingVariableError(f"{name}: {argument}")
        if operator in (":-", "-") and not given:
            return argument
        return given or ""

    return _REFERENCE.sub(resolve, value)


def _resolved(env: Mapping[str, str] = OPERATOR_ENV) -> dict:
    return _interpolate(_compose(), env)


def test_compose_runs_the_official_stores_and_our_services_from_one_image() -> None:
    services = _resolved()["services"]
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
        assert urlsplit(env["NEBULA_REDIS_URL"]).hostname == "redis"
        assert env["NEBULA_S3_ENDPOINT"] == "http://minio:9000"


@pytest.mark.parametrize("name", SECRETS)
def test_compose_refuses_to_start_without_each_secret(name: str) -> None:
    without = {k: v for k, v in OPERATOR_ENV.items() if k != name}
    with pytest.raises(MissingVariableError, match=f"^{name}: set {name}"):
        _resolved(without)


def test_compose_writes_in_no_secret_and_every_store_client_uses_the_operators() -> None:
    services = _resolved()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == SECRETS["MINIO_ROOT_PASSWORD"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    # The Redis server takes the password (from stdin, not argv) and so does its healthcheck.
    assert "requirepass $REDIS_PASSWORD" in services["redis"]["command"][-1]
    assert 'REDISCLI_AUTH="$REDIS_PASSWORD"' in services["redis"]["healthcheck"]["test"][-1]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        settings = Settings(**{k.removeprefix("NEBULA_").lower(): v for k, v in env.items()})
        assert urlsplit(settings.database_url).password == SECRETS["POSTGRES_PASSWORD"], name
        assert urlsplit(settings.redis_url).password == SECRETS["REDIS_PASSWORD"], name
        assert settings.s3_secret_key == SECRETS["MINIO_ROOT_PASSWORD"], name
        assert settings.api_token == SECRETS["NEBULA_API_TOKEN"], name
        assert settings.public_http_url == "https://live.example.com", name
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if str(value).startswith("redis://"):  # a Redis client of any kind
                assert urlsplit(value).password == SECRETS["REDIS_PASSWORD"], (name, key)


def test_only_the_tls_proxy_and_the_ingest_balancer_are_published() -> None:
    services = _resolved()["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {
        "proxy": ["80:80", "443:443", "443:443/udp"],
        "ingest-lb": ["1935:1935", "9000:9000/udp"],
    }
    balancer = services["ingest-lb"]
    assert balancer["image"].startswith("nginx:")
    assert "./deploy/ingest-lb.nginx.conf:/etc/nginx/nginx.conf:ro" in balancer["volumes"]
    config = (REPO_ROOT / "deploy" / "ingest-lb.nginx.conf").read_text()
    assert "server ingest:1935" in config and "server ingest:9000" in config
    # The ingests behind it read its PROXY header (tests/e2e/test_ingest_load_balancer.py).
    ingest = services["ingest"]
    assert ingest["environment"]["NEBULA_RTMP_PROXY_PROTOCOL"] == "true"
    assert "proxy_protocol on;" in config
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert proxy["environment"]["NEBULA_UPSTREAM"] == "api:8000"
    assert proxy["environment"]["NEBULA_PUBLIC_HOST"] == "live.example.com"


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
