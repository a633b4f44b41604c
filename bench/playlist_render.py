#!/usr/bin/env python3
"""Playlist requests against a day-long session, through the real API, kept and rendered.

    python bench/playlist_render.py [--hours 24] [--seconds 15] [--clients 8]

Builds, in a fresh database on the machine's PostgreSQL (TEST_POSTGRES_URL), one live
session of a stream that has published `--hours` of 2 s segments (43,200 for a day) in
the source and two rungs (480p, 360p), as the source writer and the ladder leave them. Then
starts a `nebula-live api` (real uvicorn) twice, with the playlist cache off
(`NEBULA_PLAYLIST_CACHE_BYTES=0`) and on (the default), and has `--clients` concurrent
players poll for `--seconds` each of: the session's recording of the source (an EVENT
playlist listing every segment) and the stream URL's 480p playlist (the live window, whose
rung prefix is found over the whole session). Players ask for gzip, as they do. Prints
JSON: requests/s, p50 and p99 latency per playlist and mode, and the playlist sizes (text,
and as sent gzipped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import session_scope  # noqa: E402
from core.migrate import upgrade  # noqa: E402
from core.models import LiveSession, Rendition, Stream  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.services import (  # noqa: E402
    free_port,
    fresh_database,
    redis_server,
    running_api,
    s3_server,
)

TD = 2
LADDER = [
    {"name": "480p", "height": 480, "bitrate": 1_400_000},
    {"name": "360p", "height": 360, "bitrate": 800_000},
]
RENDITIONS = (("source", 1280, 720, "avc1.64001f,mp4a.40.2"),) + tuple(
    (rung["name"], rung["height"] * 16 // 9, rung["height"], "avc1.64001e,mp4a.40.2")
    for rung in LADDER
)
LOGS = Path(tempfile.gettempdir()) / "nebula-bench-playlist-render"


def build_session(database_url: str, segments: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A live session `segments` long in every rendition; returns (stream, session) ids."""
    started = datetime.now(UTC) - timedelta(seconds=TD * segments)
    with session_scope(database_url) as db:
        stream = Stream(
            name="a day",
            stream_key_hash=uuid.uuid4().hex * 2,
            status="live",
            ladder=LADDER,
            presentation_sequence=0,
            target_duration=TD,
        )
        session = LiveSession(
            stream=stream,
            protocol="rtmp",
            status="live",
            ladder=LADDER,
            presentation_sequence=0,
            target_duration=TD,
            started_at=started,
            fed_at=started,
            heartbeat_at=datetime.now(UTC),
        )
        for position, (name, width, height, codecs) in enumerate(RENDITIONS):
            session.renditions.append(
                Rendition(
                    name=name,
                    width=width,
                    height=height,
                    frame_rate=30.0,
                    codecs=codecs,
                    bandwidth=3_000_000 >> position,
                    average_bandwidth=2_500_000 >> position,
                    position=position,
                    init_key=f"hls/{name}/init_0.mp4",
                )
            )
        db.add(stream)
        db.flush()
        stream_id, session_id = stream.id, session.id
        # One statement per rendition, as a bulk load: the rows the writers would have left.
        db.execute(
            text(
                """
                INSERT INTO segments (rendition_id, sequence, duration, program_date_time,
                    discontinuity, object_key, init_key, size_bytes, status, missed_deadline)
                SELECT r.id, n, :td, :started + make_interval(secs => :td * n), false,
                    'hls/' || :stream || '/' || r.name || '/' || :session || '/'
                        || lpad(n::text, 8, '0') || '.m4s',
                    'hls/' || :stream || '/' || r.name || '/' || :session || '/init_0.mp4',
                    500000, 'ready', false
                FROM renditions r, generate_series(0, :last) AS n
                WHERE r.session_id = CAST(:session AS uuid)
                """
            ),
            {
                "td": float(TD),
                "started": started,
                "stream": str(stream_id),
                "session": str(session_id),
                "last": segments - 1,
            },
        )
    return stream_id, session_id


def _percentiles(latencies: list[float], seconds: float) -> dict:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "requests": len(ordered),
        "requests_per_second": round(len(ordered) / seconds, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
    }


async def poll(base: str, path: str, clients: int, seconds: float) -> dict:
    """`clients` players fetching `path` back to back for `seconds`."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        first = await client.get(path)
        first.raise_for_status()
        deadline = time.perf_counter() + seconds

        async def player() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(player() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return {
        **_percentiles(latencies, elapsed),
        "statuses": statuses,
        "playlist_bytes": len(first.content),
        "gzipped_bytes": first.num_bytes_downloaded,
        "lines": first.text.count("\n"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seconds", type=float, default=15.0, help="of polling per case")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    segments = int(args.hours * 3600 / TD)
    result: dict = {"segments_per_rendition": segments, "clients": args.clients}
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database())
        upgrade(database_url)
        started = time.perf_counter()
        stream_id, session_id = build_session(database_url, segments)
        result["build_seconds"] = round(time.perf_counter() - started, 1)
        s3 = stack.enter_context(s3_server())
        redis_url = stack.enter_context(redis_server())
        data_dir = Path(tempfile.mkdtemp(prefix="nebula-bench-playlists-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        playlists = {
            "recording_source": f"/hls/sessions/{session_id}/source/index.m3u8",
            "stream_480p": f"/hls/{stream_id}/480p/index.m3u8",
        }
        for mode, cache_bytes in (("rendered", 0), ("kept", Settings().playlist_cache_bytes)):
            settings = Settings(
                data_dir=data_dir,
                bind_host="127.0.0.1",
                http_port=free_port(),
                database_url=database_url,
                redis_url=redis_url,
                s3_endpoint=s3.endpoint,
                s3_access_key=s3.access_key,
                s3_secret_key=s3.secret_key,
                api_token="bench-token",
                log_level="WARNING",
                playlist_cache_bytes=cache_bytes,
            )
            with running_api(settings, LOGS / f"api-{mode}.log") as client:
                base = str(client.base_url).rstrip("/")
                result[mode] = {
                    name: asyncio.run(poll(base, path, args.clients, args.seconds))
                    for name, path in playlists.items()
                }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
