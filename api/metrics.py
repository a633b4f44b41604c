"""Prometheus metrics of the API process."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis, RedisError
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.media_cache import MediaCache
from api.playlist_cache import PlaylistCache
from ingest.spool import spool_reports

registry = CollectorRegistry(auto_describe=True)

http_requests = Counter(
    "nebula_http_requests", "HTTP requests served", ["method", "route", "status"], registry=registry
)
http_seconds = Histogram(
    "nebula_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
)


class RequestMetrics:
    """Counts every request under its route template (ids would explode the label set), as
    plain ASGI: the route the router matched is in the scope once it has run, so nothing is
    matched twice, and no task or stream is spent per request as `BaseHTTPMiddleware` would
    (bench/viewer_load.py profiles the API). FastAPI's own pages (/docs) and mounts leave
    no route in the scope: those are matched here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = _route_template(scope)
            http_requests.labels(scope["method"], template, str(status)).inc()
            http_seconds.labels(scope["method"], template).observe(time.perf_counter() - started)


def spool_registry(redis: Redis) -> CollectorRegistry:
    """The ingests' spools as gauges, from their reports in Redis (none while it is away)."""
    spools = CollectorRegistry(auto_describe=True)
    gauges = {
        "used_bytes": Gauge(
            "nebula_ingest_spool_bytes", "Segment bytes waiting for storage", ["ingest"],
            registry=spools,
        ),
        "max_bytes": Gauge(
            "nebula_ingest_spool_max_bytes", "Spool size above which publishes are refused",
            ["ingest"], registry=spools,
        ),
        "waiting": Gauge(
            "nebula_ingest_spool_segments", "Segments waiting for storage", ["ingest"],
            registry=spools,
        ),
        "unplaced": Gauge(
            "nebula_ingest_spool_unplaced_segments",
            "Spooled segments set aside: no recording could take them in order", ["ingest"],
            registry=spools,
        ),
        "full": Gauge(
            "nebula_ingest_spool_full", "1 while the ingest refuses new publishes", ["ingest"],
            registry=spools,
        ),
    }  # fmt: skip
    try:
        reports = spool_reports(redis)
    except RedisError:
        return spools
    for ingest, report in reports.items():
        for field, gauge in gauges.items():  # an ingest of the release before has no unplaced
            gauge.labels(ingest).set(float(report.get(field, 0)))
    return spools


def cache_registry(cache: PlaylistCache, media: MediaCache) -> CollectorRegistry:
    """This process's playlist and media caches: how often they served, rendered or fetched,
    and what they hold."""
    kept = CollectorRegistry(auto_describe=True)
    kept.register(_CacheCollector(cache, media))
    return kept


class _CacheCollector(Collector):
    def __init__(self, cache: PlaylistCache, media: MediaCache) -> None:
        self.cache = cache
        self.media = media

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "nebula_playlist_cache_hits",
            "Media playlist requests served a kept rendering",
            value=self.cache.hits,
        )
        yield CounterMetricFamily(
            "nebula_playlist_cache_unqueried",
            "Of the hits, those served without a database query (no event since)",
            value=self.cache.unqueried,
        )
        yield CounterMetricFamily(
            "nebula_playlist_cache_renders",
            "Media playlists rendered and kept",
            value=self.cache.renders,
        )
        yield GaugeMetricFamily(
            "nebula_playlist_cache_bytes", "Bytes of media playlists kept", self.cache.held_bytes
        )
        yield CounterMetricFamily(
            "nebula_media_cache_hits", "Media requests served a kept object", value=self.media.hits
        )
        yield CounterMetricFamily(
            "nebula_media_cache_fetches",
            "Media objects fetched from the bucket and kept",
            value=self.media.fetches,
        )
        yield GaugeMetricFamily(
            "nebula_media_cache_bytes", "Bytes of media objects kept", self.media.held_bytes
        )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is None:
        routes = scope["app"].router.routes
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", "unmatched")
