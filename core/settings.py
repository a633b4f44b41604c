"""The one settings object. Every knob is a typed field with a default, read from `NEBULA_*`."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_worker_count() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEBULA_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Runtime state of the embedded stack.")
    bind_host: str = Field("0.0.0.0", description="Address the HTTP, RTMP and SRT listeners bind.")
    public_host: str = Field(
        "127.0.0.1", description="Host name put in the URLs we hand out (playback, RTMP, SRT)."
    )
    http_port: int = Field(8000, description="HTTP port: REST API, HLS, websockets, player.")
    rtmp_port: int = Field(1935, description="RTMP ingest port.")
    srt_port: int = Field(9000, description="SRT ingest port (UDP).")

    database_url: str | None = Field(
        None, description="PostgreSQL URL. Unset: `up` runs an embedded PostgreSQL."
    )
    redis_url: str | None = Field(
        None, description="Redis URL. Unset: `up` runs an embedded Redis."
    )
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint (host:port or URL). Unset: `up` runs an embedded S3 store."
    )
    s3_access_key: str = Field("nebula", description="S3 access key.")
    s3_secret_key: str | None = Field(
        None, description="S3 secret key. Unset with the embedded store: generated and kept."
    )
    s3_bucket: str = Field("nebula", description="Bucket holding segments and playlists.")
    s3_region: str | None = Field(None, description="S3 region, if the store wants one.")

    api_token: str | None = Field(
        None, description="Bearer token for /api/v1. Unset: `up` generates one and keeps it."
    )

    segment_seconds: float = Field(2.0, gt=0, description="Target HLS segment duration.")
    playlist_window: int = Field(10, ge=3, description="Segments listed in a live playlist.")
    reconnect_grace_seconds: float = Field(
        10.0, ge=0, description="A publisher reconnecting within this continues its session."
    )
    workers: int = Field(
        default_factory=default_worker_count, ge=1, description="Celery worker processes."
    )

    rtmp_max_message_bytes: int = Field(
        8 * 1024 * 1024, description="Largest RTMP message (one video frame) accepted."
    )
    max_upload_bytes: int = Field(4 * 1024**3, description="Largest file upload accepted.")

    embedded_postgres_port: int = Field(15432, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(16379, description="Port of the embedded Redis.")
    embedded_s3_port: int = Field(
        18333, description="Port of the embedded S3 store; it also uses the seven ports above it."
    )

    log_level: str = Field("INFO", description="Log level of every service.")

    @property
    def public_http_url(self) -> str:
        return f"http://{self.public_host}:{self.http_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
