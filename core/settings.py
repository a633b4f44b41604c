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


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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
    public_url: str | None = Field(
        None,
        description="Base URL of the API as clients reach it, put in the playback URLs we "
        "hand out, e.g. `https://live.example.com` behind a TLS proxy. Unset: "
        "`http://PUBLIC_HOST:HTTP_PORT`.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Comma-separated addresses of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto the API believes (`*`: any), so per-address limits count clients, "
        "not the proxy.",
    )
    rtmp_port: int = Field(1935, description="RTMP ingest port.")
    srt_port: int = Field(9000, description="SRT ingest port (UDP).")
    ingest_processes: int = Field(
        default_factory=default_worker_count,
        ge=1,
        description="Ingest processes `up` runs, sharing the RTMP and SRT ports: the "
        "kernel spreads new publishers across them (SO_REUSEPORT).",
    )
    api_processes: int = Field(
        default_factory=default_worker_count,
        ge=1,
        description="API processes `up` runs, sharing the HTTP port (SO_REUSEPORT).",
    )
    reuse_port: bool = Field(
        False,
        description="Listen with SO_REUSEPORT, so several processes of a kind on one host "
        "share their ports (the API's HTTP, the ingest's RTMP and SRT); `up` sets it where "
        "it runs more than one. Off, a port in use fails the start.",
    )

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
    segment_max_open_targets: float = Field(
        10.0,
        ge=1,
        description="A publish whose open segment runs this many target durations without a "
        "keyframe to cut at is dropped (its open segment discarded): a GOP must be shorter.",
    )
    segment_max_open_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="A publish whose open segment grows past this many bytes without a "
        "keyframe to cut at is dropped, as above: what one publisher may hold in memory.",
    )
    playlist_window: int = Field(
        10, ge=6, description="Segments listed in a live playlist (Apple: at least 6)."
    )
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
        default_factory=default_worker_count,
        ge=1,
        description="Celery worker processes for uploads, webhooks and housekeeping.",
    )
    live_workers: int = Field(
        default_factory=default_worker_count,
        ge=1,
        description="Celery worker processes of their own for the live ladder (queue "
        "nebula.live), so no upload holds up a live rung.",
    )
    batch_worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness of the upload and housekeeping worker processes: on a host "
        "that runs both, the live ladder gets the CPU first.",
    )

    rtmp_max_message_bytes: int = Field(
        8 * 1024 * 1024, description="Largest RTMP message (one video frame) accepted."
    )
    rtmp_max_chunk_bytes: int = Field(
        65536, ge=128, description="Largest RTMP chunk size a client may set (Set Chunk Size)."
    )
    rtmp_max_chunk_streams: int = Field(
        64, ge=1, description="RTMP chunk streams one client may open at once."
    )
    rtmp_max_pending_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1,
        description="Bytes of partly received RTMP messages held for one client.",
    )
    rtmp_max_receive_buffer_bytes: int = Field(
        1024 * 1024,
        description="Unparsed bytes held for one RTMP client; must hold one largest chunk.",
    )
    rtmp_max_prepublish_amf_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest RTMP command or data message before a publish is accepted "
        "(connect, createStream, publish are a few hundred bytes); a larger one closes the "
        "connection before it is decoded.",
    )
    rtmp_out_chunk_bytes: int = Field(
        4096, ge=1, le=0x7FFFFFFF, description="Chunk size we send RTMP clients."
    )
    rtmp_window_ack_bytes: int = Field(
        5_000_000, ge=1, description="Window Acknowledgement Size we announce to RTMP clients."
    )
    rtmp_publish_deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="An RTMP client must finish the handshake, connect and publish within "
        "this long of connecting, however it paces its bytes, or it is dropped.",
    )
    rtmp_write_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="An RTMP client that does not take what we send it (acknowledgements, "
        "statuses) within this long is dropped.",
    )
    rtmp_max_connections: int = Field(
        1000,
        ge=1,
        description="RTMP connections held at once, publishing or not; more are closed on "
        "accept. The ingest raises its open-file limit to the hard limit at start.",
    )
    rtmp_max_connections_per_ip: int = Field(
        16,
        ge=1,
        description="RTMP connections held at once from one IP address; more are closed on accept.",
    )
    rtmp_proxy_protocol: bool = Field(
        False,
        description="Every RTMP connection begins with a PROXY protocol header (v1 or v2), "
        "as a TCP load balancer in front of the ingest sends it (nginx `proxy_protocol on`, "
        "HAProxy `send-proxy`); its address is the publisher's for the caps and the logs. "
        "A connection without one is closed. Only behind such a balancer: the header is "
        "believed.",
    )
    idle_timeout_seconds: float = Field(
        30.0, gt=0, description="An RTMP or SRT client that sends nothing this long is dropped."
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the ingest marks the sessions it holds as alive."
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
    peer_idle_timeout_ms: int = Field(
        5000,
        ge=1000,
        description="SRT silence after which libsrt breaks a link (SRTO_PEERIDLETIMEO); a "
        "break within half of it after the last data is the publisher closing.",
    )
    key_check_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="Longest an SRT handshake waits for the stream key check; every SRT "
        "handshake on the port waits behind it.",
    )
    srt_key_check_workers: int = Field(
        2,
        ge=1,
        description="SRT stream key lookups run at once; a handshake that finds them all "
        "busy is refused at once instead of waiting behind them.",
    )
    srt_unknown_key_cache_size: int = Field(
        4096,
        ge=0,
        description="Unknown SRT stream keys remembered (and refused without a lookup).",
    )
    srt_unknown_key_cache_seconds: float = Field(
        60.0,
        ge=0,
        description="How long an unknown SRT stream key is refused without a lookup.",
    )

    max_upload_bytes: int = Field(
        20 * 1024**3, gt=0, description="Largest file `POST /api/v1/uploads` accepts (413 above)."
    )
    upload_max_pixels: int = Field(
        4096 * 2160,
        gt=0,
        description="Largest video frame (width x height) an upload may have (422 above; the "
        "default is DCI 4K).",
    )
    upload_max_seconds: float = Field(
        24 * 3600.0,
        gt=0,
        description="Longest upload: its declared duration (422 above) and the extent of its "
        "timestamps, which the job refuses past this.",
    )
    upload_max_frame_rate: float = Field(
        120.0, gt=0, description="Highest video frame rate an upload may have (422 above)."
    )
    upload_max_deliveries: int = Field(
        3,
        ge=1,
        description="Starts of one upload job or chunk task (the first included) before an "
        "upload whose workers keep dying on it (out of memory, a crash) is failed.",
    )
    upload_stuck_seconds: float = Field(
        48 * 3600.0,
        gt=0,
        description="An upload still processing this long after it was accepted is failed by "
        "the housekeeping sweep (its job was lost).",
    )
    worker_max_memory_mb: int = Field(
        2048,
        ge=0,
        description="Resident memory (MiB) past which a worker process (either pool) is "
        "replaced once its task ends (Celery --max-memory-per-child); 0: never.",
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
    first_variant_bitrate: int = Field(
        2_000_000,
        gt=0,
        description="The master lists first the variant whose BANDWIDTH is closest to this "
        "(bit/s): players start on the first one (Apple HLS authoring 1.32).",
    )
    assumed_audio_bitrate: int = Field(
        128_000,
        ge=0,
        description="Audio bit rate counted in a variant's first BANDWIDTH when the publisher "
        "announces none (no onMetaData audiodatarate, as over SRT).",
    )
    transcode_retries: int = Field(
        5,
        ge=0,
        description="Retries of a ladder task on storage or database faults before its "
        "segment is recorded as failed (EXT-X-GAP in the rungs).",
    )
    upload_retries: int = Field(
        3,
        ge=0,
        description="Retries of an upload job or chunk on storage or database faults before "
        "the upload is failed.",
    )
    upload_chunk_seconds: float = Field(
        20.0,
        gt=0,
        description="Length of the chunks (one task each) an upload whose video is encoded is "
        "split into: long enough that a chunk's seek and encoder start-up are small beside "
        "its work, short enough that a few minutes of video keep every worker busy.",
    )
    store_attempts: int = Field(
        4,
        ge=1,
        description="Tries of each upload source segment write (object or row) on storage "
        "or database faults before the segment is given up; a live segment waits in the "
        "ingest's spool and is tried again until storage takes it.",
    )
    spool_max_bytes: int = Field(
        2 * 2**30,
        ge=0,
        description="Bytes of live segments an ingest may hold on local disk (under the "
        "data dir's spool/) while storage or the database is away; above them it refuses "
        "new publishes with the reason and keeps the live ones.",
    )

    rung_deadline_targets: float = Field(
        3.0,
        gt=0,
        description="A live rung segment still missing this many target segment durations "
        "after its source segment is listed as EXT-X-GAP, and the rung moves on.",
    )
    ladder_lease_seconds: float = Field(
        3.0,
        gt=0,
        description="A running ladder task holds its segment this long, renewed while it "
        "runs: once it lapses (the worker died), the work is sent again.",
    )
    ladder_sweep_seconds: float = Field(
        1.0,
        gt=0,
        description="How often each ingest sends ladder work the broker has not taken, or "
        "whose worker died, and lists overdue rung segments as gaps.",
    )
    ladder_max_sends: int = Field(
        3,
        ge=1,
        description="Sends of one segment's ladder task (the first included) before a "
        "segment whose workers keep dying on it is recorded as failed.",
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
        "`90m`. Unset: keep recordings forever, and `up`, the API and the batch worker warn "
        "of it at startup.",
    )
    playback_cors_origins: str = Field(
        "*",
        description="Comma-separated origins whose pages may play /hls and the bucket's "
        "objects (CORS): `*` any, empty none, else e.g. `https://a.example,https://b.example`.",
    )
    api_cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call /api/v1 from a browser; none."
    )
    live_playlist_max_age: int = Field(
        0,
        ge=0,
        description="Seconds a live playlist may be cached; 0 sends `no-cache`. Behind a CDN, "
        "1 lets the edge absorb the polling at the cost of up to a second of lag.",
    )
    ended_playlist_max_age: int = Field(
        3600,
        ge=0,
        description="Seconds a recording's playlist that holds EXT-X-ENDLIST may be cached.",
    )
    playlist_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Bytes of rendered media playlists each API process keeps under the "
        "version of the rows they come from, so a poll that finds them unchanged costs a few "
        "indexed reads instead of a render; 0 renders every request.",
    )
    media_cache_bytes: int = Field(
        128 * 1024 * 1024,
        ge=0,
        description="Bytes of segments and init segments each API process keeps once "
        "fetched from the bucket (each at most a minute), so the viewers at a stream's live "
        "edge cost one bucket GET per object, not one each; 0 fetches every request.",
    )
    playlist_fresh_seconds: float = Field(
        1.0,
        ge=0,
        description="Seconds an API process serves a live media playlist again without "
        "asking PostgreSQL, while no event on the stream's channel says it changed (events "
        "make it ask at once; this bounds a change whose event was lost); 0 asks every "
        "request.",
    )
    max_request_body_bytes: int = Field(
        64 * 1024,
        gt=0,
        description="Largest request body the API reads on any route but the upload one "
        "(413 above), counted as it arrives, chunked bodies too.",
    )
    health_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="/healthz checks the components at most this often, one check shared by "
        "every caller; 0 checks on each call (still one at a time).",
    )
    ws_queue_size: int = Field(
        256, ge=1, description="Messages queued for one websocket client before it is dropped."
    )
    ws_ping_seconds: float = Field(
        15.0, gt=0, description="A websocket with nothing to say gets a ping this often."
    )
    ws_max_message_bytes: int = Field(
        4096,
        ge=125,
        description="Largest websocket message a client may send (clients need send nothing); "
        "larger closes the connection with 1009.",
    )
    ws_max_connections_per_ip: int = Field(
        256,
        ge=1,
        description="Websockets one client address may hold open on one API process; more are "
        "closed with 1013 at once.",
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
    def playback_cors_origin_list(self) -> list[str]:
        return _comma_list(self.playback_cors_origins)

    @property
    def api_cors_origin_list(self) -> list[str]:
        return _comma_list(self.api_cors_origins)

    @property
    def public_http_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.public_host}:{self.http_port}"


def retention_off_warning(settings: Settings) -> str | None:
    """What to warn of at startup while nothing deletes recordings; None once it is set."""
    if settings.recording_retention_delta is not None:
        return None
    return (
        "NEBULA_RECORDING_RETENTION is not set: every recording, and the media of every "
        "upload (failed ones included), is kept forever; set it (e.g. 30d) to delete ended "
        "sessions that old"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
