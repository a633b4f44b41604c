"""The one settings object. Every knob is a typed field with a default, read from `NEBULA_*`."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RETENTION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


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
    presentation_hold_seconds: float = Field(
        30.0,
        ge=0,
        description="After the last publisher left, the stream URL's playlists go on with "
        "EXT-X-GAP this long (from the disconnect) before EXT-X-ENDLIST, so a player left "
        "open plays the stream's next session without a reload.",
    )
    workers: int = Field(
        default_factory=default_worker_count, ge=1, description="Celery worker processes."
    )

    rtmp_max_message_bytes: int = Field(
        8 * 1024 * 1024, description="Largest RTMP message (one video frame) accepted."
    )
    srt_latency_ms: int = Field(
        120,
        ge=20,
        description="SRT receiver latency (SRTO_RCVLATENCY): time lost packets have to be "
        "resent. Raise it on lossy or long links; the sender's own latency still counts.",
    )
    srt_passphrase: str | None = Field(
        None,
        min_length=10,
        max_length=79,
        description="SRT encryption passphrase (10 to 79 characters). Set: publishers must "
        "send the same `passphrase`; unset: unencrypted.",
    )

    max_upload_bytes: int = Field(
        20 * 1024**3, gt=0, description="Largest file `POST /api/v1/uploads` accepts (413 above)."
    )

    embedded_postgres_port: int = Field(15432, description="Port of the embedded PostgreSQL.")
    embedded_redis_port: int = Field(16379, description="Port of the embedded Redis.")
    embedded_s3_port: int = Field(
        18333, description="Port of the embedded S3 store; it also uses the seven ports above it."
    )

    log_level: str = Field("INFO", description="Log level of every service.")

    transcode_preset: str = Field("veryfast", description="x264 preset of the ladder rungs.")
    transcode_threads: int = Field(
        1,
        ge=0,
        description="Decoder and x264 threads per worker process. 1 suits one worker per core; "
        "0 lets the codecs choose.",
    )
    transcode_retries: int = Field(
        5,
        ge=0,
        description="Retries of a ladder task on storage or database faults before its "
        "segment is recorded as failed (EXT-X-GAP in the rungs).",
    )

    webhook_url: str | None = Field(
        None, description="Receives stream.live, stream.idle, session.ended, upload.* as JSON."
    )
    webhook_secret: str | None = Field(
        None, description="HMAC-SHA256 key signing each webhook (X-Nebula-Signature header)."
    )
    webhook_max_attempts: int = Field(8, ge=1, description="Deliveries tried before giving up.")
    recording_retention: str | None = Field(
        None,
        description="Delete ended sessions (objects and rows) this old, e.g. `30d`, `12h`, "
        "`90m`. Unset: keep recordings forever.",
    )
    ws_queue_size: int = Field(
        256, ge=1, description="Messages queued for one websocket client before it is dropped."
    )
    ws_ping_seconds: float = Field(
        15.0, gt=0, description="A websocket with nothing to say gets a ping this often."
    )

    @field_validator("recording_retention")
    @classmethod
    def _retention_format(cls, value: str | None) -> str | None:
        if value is not None and not _RETENTION.fullmatch(value.strip()):
            raise ValueError(f"expected a number and a unit (d, h, m, s) like 30d, got {value!r}")
        return value.strip() if value else None

    @property
    def recording_retention_delta(self) -> timedelta | None:
        if not self.recording_retention:
            return None
        match = _RETENTION.fullmatch(self.recording_retention)
        amount, unit = float(match.group(1)), match.group(2)
        return timedelta(seconds=amount * _UNIT_SECONDS[unit])

    @property
    def public_http_url(self) -> str:
        return f"http://{self.public_host}:{self.http_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
