"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis import Redis

from api.body_limit import RequestBodyLimit
from api.cors import ScopedCors
from api.health import HealthMonitor, component_probes
from api.media_cache import MediaCache
from api.metrics import RequestMetrics
from api.playback_fast_path import PlaybackFastPath
from api.playlist_cache import PlaylistCache
from api.routes import health, hls, player, sessions, streams, uploads, ws
from api.stream_changes import StreamChanges
from api.unavailable import answer_unavailable_services
from api.ws import AddressSlots, EventHub
from core.settings import Settings, get_settings
from core.storage import ObjectStore
from packager.celery_app import make_celery


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.hub.start()
        yield
        await app.state.hub.stop()
        app.state.health.close()
        app.state.redis.close()

    app = FastAPI(
        title="nebula-live",
        summary="Live-streaming ingest and HLS packaging",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.redis = Redis.from_url(
        settings.redis_url, socket_timeout=3, socket_connect_timeout=3, health_check_interval=30
    )
    app.state.store = ObjectStore.from_settings(settings)
    app.state.playlist_cache = PlaylistCache(
        settings.playlist_cache_bytes, settings.playlist_fresh_seconds
    )
    app.state.stream_changes = StreamChanges()
    app.state.media_cache = MediaCache(settings.media_cache_bytes)
    app.state.celery = make_celery(settings.redis_url)
    app.state.health = HealthMonitor(
        component_probes(settings.database_url, app.state.redis, app.state.store, app.state.celery),
        settings.health_cache_seconds,
    )
    app.state.hub = EventHub(settings.redis_url, settings.ws_queue_size, app.state.stream_changes)
    app.state.ws_slots = AddressSlots(settings.ws_max_connections_per_ip)
    app.add_middleware(PlaybackFastPath)  # innermost: the others wrap what it answers
    app.add_middleware(RequestMetrics)
    app.add_middleware(
        ScopedCors,
        playback_origins=settings.playback_cors_origin_list,
        api_origins=settings.api_cors_origin_list,
    )
    # Added last, so it runs first: before metrics, CORS and every route's auth.
    app.add_middleware(
        RequestBodyLimit,
        max_bytes=settings.max_request_body_bytes,
        exempt_paths=(uploads.router.prefix,),
    )
    answer_unavailable_services(app)
    app.include_router(health.router)
    app.include_router(streams.router)
    app.include_router(sessions.router)
    app.include_router(uploads.router)
    app.include_router(hls.router)
    app.include_router(ws.router)
    app.include_router(player.router)
    app.mount("/player/static", player.static_files(), name="player-static")
    return app
