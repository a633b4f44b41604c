"""Prometheus metrics of the API process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis, RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

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


async def record_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count every request under its route template, so ids do not explode the label set."""
    started = time.perf_counter()
    response = await call_next(request)
    template = route_template(request)
    http_requests.labels(request.method, template, str(response.status_code)).inc()
    http_seconds.labels(request.method, template).observe(time.perf_counter() - started)
    return response


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


def route_template(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return getattr(route, "path", "unmatched")
    return "unmatched"
