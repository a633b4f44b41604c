"""What a browser player and a cache in front of us see: CORS, gzip, Cache-Control, ranges,
from the API and from the real S3 server the mirror writes to; the same answers, errors and
metrics whether a request takes the playback fast path past the router or not."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api import deps
from api.app import create_app
from core.settings import Settings
from core.storage import ObjectStore
from media.hls.segment_packager import SegmentPackager
from media.ladder import SOURCE
from packager.keys import (
    init_name,
    master_playlist_key,
    media_key,
    media_playlist_key,
    segment_name,
)
from packager.mirror import write_playlists
from packager.source_writer import SourceWriter
from tests.integration.test_management_api import AUTH, _add_session, _create
from tests.media import make_source, package_flv

OTHER_SITE = "http://player.example"
PREFLIGHT = {
    "Origin": OTHER_SITE,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "range",
}


@pytest.fixture(scope="module")
def api(settings: Settings, store: ObjectStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def recorded(api: TestClient, settings: Settings, store: ObjectStore) -> tuple[str, uuid.UUID]:
    """A stream whose one session has ended, its objects in the bucket."""
    stream = _create(api, "delivery")
    started = datetime.now(UTC) - timedelta(minutes=1)
    session_id = _add_session(settings, stream["id"], started=started, segments=8, store=store)
    return stream["id"], session_id


def _stat(store: ObjectStore, key: str) -> tuple[str, str | None]:
    stat = store.client.stat_object(store.bucket, key)
    return stat.content_type, stat.metadata.get("Cache-Control")


def test_a_player_on_another_site_passes_the_preflight_and_reads_lengths_and_ranges(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    stream_id, session_id = recorded
    for path in (
        f"/hls/{stream_id}/master.m3u8",
        f"/hls/{stream_id}/source/index.m3u8",
        f"/hls/sessions/{session_id}/source/index.m3u8",
        f"/hls/{stream_id}/source/{session_id}/{segment_name(0)}",
    ):
        preflight = api.options(path, headers=PREFLIGHT)
        assert preflight.status_code == 200, (path, preflight.text)
        assert preflight.headers["access-control-allow-origin"] in ("*", OTHER_SITE)
        allowed = preflight.headers["access-control-allow-methods"]
        assert {"GET", "HEAD", "OPTIONS"} <= {m.strip() for m in allowed.split(",")}
        assert "range" in preflight.headers["access-control-allow-headers"].lower()

        response = api.get(path, headers={"Origin": OTHER_SITE})
        assert response.status_code == 200, path
        assert response.headers["access-control-allow-origin"] == "*"
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "content-length" in exposed and "content-range" in exposed


def test_the_management_api_answers_no_other_site_unless_configured(
    api: TestClient, settings: Settings
) -> None:
    preflight = {**PREFLIGHT, "Access-Control-Request-Headers": "authorization"}
    closed = api.options("/api/v1/streams", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    assert "access-control-allow-origin" not in api.get("/api/v1/streams").headers

    own = settings.model_copy(
        update={"api_cors_origins": OTHER_SITE, "playback_cors_origins": "https://tv.example"}
    )
    with TestClient(create_app(own), headers=AUTH) as client:
        opened = client.options("/api/v1/streams", headers=preflight)
        assert opened.status_code == 200
        assert opened.headers["access-control-allow-origin"] == OTHER_SITE
        assert "authorization" in opened.headers["access-control-allow-headers"].lower()
        # Playback now answers only the one site it names.
        refused = client.options("/hls/x/master.m3u8", headers=PREFLIGHT)
        assert refused.status_code == 400
        named = client.get("/hls/x/master.m3u8", headers={"Origin": "https://tv.example"})
        assert named.headers["access-control-allow-origin"] == "https://tv.example"


def test_playlists_are_gzipped_for_clients_that_accept_it_and_segments_never(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    stream_id, session_id = recorded
    path = f"/hls/sessions/{session_id}/source/index.m3u8"
    plain = api.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert "Accept-Encoding" in plain.headers["vary"]

    # The client would decode it; read the bytes as they came.
    with api.stream("GET", path, headers={"Accept-Encoding": "gzip, deflate"}) as zipped:
        body = b"".join(zipped.iter_raw())
    assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).decode() == plain.text
    assert len(body) < len(plain.content)

    refused = api.get(path, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers

    segment = api.get(
        f"/hls/{stream_id}/source/{session_id}/{segment_name(0)}",
        headers={"Accept-Encoding": "gzip"},
    )
    assert "content-encoding" not in segment.headers
    assert segment.content == b"segment"


def test_cache_control_never_lets_a_stream_url_serve_an_old_session(
    api: TestClient, settings: Settings, recorded: tuple[str, uuid.UUID]
) -> None:
    stream_id, session_id = recorded
    # The session has ended: its stream-scoped playlists end too, yet a new session can
    # follow on the same URLs at any time.
    for path in (f"/hls/{stream_id}/master.m3u8", f"/hls/{stream_id}/source/index.m3u8"):
        response = api.get(path)
        assert response.headers["cache-control"] == "no-cache", path
    stream_playlist = api.get(f"/hls/{stream_id}/source/index.m3u8")
    assert "#EXT-X-ENDLIST" in stream_playlist.text

    ended = api.get(f"/hls/sessions/{session_id}/source/index.m3u8")
    assert "#EXT-X-ENDLIST" in ended.text
    assert ended.headers["cache-control"] == f"public, max-age={settings.ended_playlist_max_age}"
    master = api.get(f"/hls/sessions/{session_id}/master.m3u8")
    assert master.headers["cache-control"] == "no-cache"
    segment = api.get(f"/hls/sessions/{session_id}/source/{segment_name(0)}")
    assert segment.headers["cache-control"] == "public, max-age=31536000, immutable"

    live = _add_session(settings, stream_id, started=datetime.now(UTC), segments=2, status="live")
    recording = api.get(f"/hls/sessions/{live}/source/index.m3u8")
    assert "#EXT-X-ENDLIST" not in recording.text
    assert recording.headers["cache-control"] == "no-cache"

    short = settings.model_copy(update={"live_playlist_max_age": 1})
    with TestClient(create_app(short)) as client:
        assert client.get(f"/hls/{stream_id}/master.m3u8").headers["cache-control"] == (
            "public, max-age=1"
        )


def test_a_playlist_revalidation_with_its_etag_is_a_304(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    _, session_id = recorded
    path = f"/hls/sessions/{session_id}/source/index.m3u8"
    first = api.get(path)
    again = api.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert api.get(path, headers={"If-None-Match": 'W/"other"'}).status_code == 200


def test_media_answers_head_and_single_byte_ranges(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    stream_id, session_id = recorded
    path = f"/hls/{stream_id}/source/{session_id}/{segment_name(0)}"  # b"segment"
    head = api.head(path)
    assert (head.status_code, head.headers["content-length"]) == (200, "7")
    assert head.headers["accept-ranges"] == "bytes"
    assert api.head(f"/hls/{stream_id}/master.m3u8").status_code == 200

    cases = {
        "bytes=0-2": (206, b"seg", "bytes 0-2/7"),
        "bytes=4-": (206, b"ent", "bytes 4-6/7"),
        "bytes=-2": (206, b"nt", "bytes 5-6/7"),
        "bytes=3-100": (206, b"ment", "bytes 3-6/7"),
        "bytes=7-": (416, b"", "bytes */7"),
    }
    for header, (code, body, content_range) in cases.items():
        response = api.get(path, headers={"Range": header})
        assert (response.status_code, response.content) == (code, body), header
        assert response.headers["content-range"] == content_range, header
    for ignored in ("bytes=0-1,3-4", "items=0-1", "bytes=x-1"):
        response = api.get(path, headers={"Range": ignored})
        assert (response.status_code, response.content) == (200, b"segment"), ignored


def test_viewers_asking_for_one_segment_cost_one_bucket_get_and_a_missing_one_is_not_kept(
    api: TestClient, recorded: tuple[str, uuid.UUID], store: ObjectStore
) -> None:
    stream_id, session_id = recorded
    media = api.app.state.media_cache
    path = f"/hls/{stream_id}/source/{session_id}/{segment_name(6)}"  # no test asked before
    fetches, hits = media.fetches, media.hits
    answers = [api.get(path) for _ in range(5)]
    assert {(a.status_code, a.content) for a in answers} == {(200, b"segment")}
    assert (media.fetches - fetches, media.hits - hits) == (1, 4)

    # Not in the bucket yet (a rung segment whose task still runs): a 404, nothing kept,
    # and served once it is written.
    late = segment_name(99)
    assert api.get(f"/hls/{stream_id}/source/{session_id}/{late}").status_code == 404
    store.put_bytes(
        media_key(uuid.UUID(stream_id), SOURCE, session_id, late), b"late", "video/iso.segment"
    )
    found = api.get(f"/hls/{stream_id}/source/{session_id}/{late}")
    assert (found.status_code, found.content) == (200, b"late")


def test_mirrored_playlists_and_stored_media_carry_their_type_and_cache_control(
    settings: Settings, store: ObjectStore, api: TestClient, tmp_path: Path
) -> None:
    stream = _create(api, "mirror")
    stream_id = uuid.UUID(stream["id"])
    session_id = _add_session(
        settings, stream["id"], started=datetime.now(UTC), segments=0, status="live"
    )
    packager = SegmentPackager(settings.segment_seconds)
    segments = package_flv(make_source(tmp_path / "short.flv", seconds=3, size="320x240"), packager)
    writer = SourceWriter(
        settings,
        store,
        redis.Redis.from_url(settings.redis_url),
        api.app.state.celery,
        stream_id=stream_id,
        session_id=session_id,
        timeline_start=0,
        transcode=False,
    )
    writer.write(segments[0], packager, metadata={}, bytes_ingested=0)
    write_playlists(
        settings, store, redis.Redis.from_url(settings.redis_url), stream_id, master=True
    )

    immutable = "public, max-age=31536000, immutable"
    assert _stat(store, media_key(stream_id, SOURCE, session_id, segment_name(0))) == (
        "video/iso.segment",
        immutable,
    )
    assert _stat(store, media_key(stream_id, SOURCE, session_id, init_name(0))) == (
        "video/mp4",
        immutable,
    )
    for key in (master_playlist_key(stream_id), media_playlist_key(stream_id, SOURCE)):
        assert _stat(store, key) == ("application/vnd.apple.mpegurl", "no-cache")


def test_the_bucket_lets_players_on_other_sites_read_it(
    settings: Settings, store: ObjectStore
) -> None:
    key = "hls/cors-probe/index.m3u8"
    store.put_bytes(key, b"#EXTM3U\n", "application/vnd.apple.mpegurl", cache_control="no-cache")
    url = f"{settings.s3_endpoint}/{store.bucket}/{key}"
    preflight = urllib.request.Request(url, method="OPTIONS", headers=PREFLIGHT)
    with urllib.request.urlopen(preflight, timeout=10) as response:
        assert response.headers["Access-Control-Allow-Origin"] in ("*", OTHER_SITE)
        assert "range" in response.headers["Access-Control-Allow-Headers"].lower()
    # What a CDN (or a page given a presigned URL) fetches: the rule and the cache header.
    signed = store.client.presigned_get_object(store.bucket, key)
    with urllib.request.urlopen(
        urllib.request.Request(signed, headers={"Origin": OTHER_SITE}), timeout=10
    ) as response:
        assert response.headers["Access-Control-Allow-Origin"] in ("*", OTHER_SITE)
        assert "Content-Range" in response.headers["Access-Control-Expose-Headers"]
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.read() == b"#EXTM3U\n"

    # A rule naming other sites refuses this one; no rule of ours leaves the store's default.
    try:
        store.ensure_bucket(["https://only.example"])
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(preflight, timeout=10)
        assert refused.value.code == 403
        store.ensure_bucket([])
        with urllib.request.urlopen(preflight, timeout=10) as response:
            assert response.status == 200
    finally:
        store.ensure_bucket(settings.playback_cors_origin_list)


def _routed_only() -> None:
    raise RuntimeError("a dependency of the routed path was solved")


def test_the_live_playlist_and_its_segments_skip_the_router_and_its_dependencies(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    """`api.playback_fast_path`: with every dependency of the two routes failing, their GETs
    still answer: nothing solved them. A HEAD of the same URLs is routed, and fails."""
    stream_id, session_id = recorded
    routed = TestClient(api.app, headers=AUTH, raise_server_exceptions=False)
    paths = [
        f"/hls/{stream_id}/source/index.m3u8",
        f"/hls/{stream_id}/source/{session_id}/{segment_name(0)}",
    ]
    expected = [api.get(path) for path in paths]
    assert [r.status_code for r in expected] == [200, 200]
    overridden = (
        deps.get_app_settings,
        deps.get_playlist_cache,
        deps.get_stream_changes,
        deps.get_media_cache,
        deps.get_store,
    )
    api.app.dependency_overrides.update({dependency: _routed_only for dependency in overridden})
    try:
        for path, before in zip(paths, expected, strict=True):
            response = api.get(path)
            assert response.status_code == 200, response.text
            assert response.content == before.content
            assert response.headers["content-type"] == before.headers["content-type"]
            assert response.headers["cache-control"] == before.headers["cache-control"]
            assert routed.head(path).status_code == 500
    finally:
        api.app.dependency_overrides.clear()


NOBODY = uuid.uuid4()


@pytest.mark.parametrize(
    "path",
    [
        "/hls/{stream}/720p/index.m3u8",  # a rendition the presentation lacks
        "/hls/{stream}/Bad..name/index.m3u8",
        "/hls/{nobody}/source/index.m3u8",
        "/hls/{stream}/source/{session}/00000098.m4s",  # no such object (99 is written above)
        "/hls/{stream}/source/{session}/evil.txt",
    ],
)
def test_what_the_fast_path_refuses_reads_as_the_router_refuses_it(
    api: TestClient, recorded: tuple[str, uuid.UUID], path: str
) -> None:
    """The router takes the same UUIDs in capitals, which the fast path leaves to it."""
    ids = {"stream": recorded[0], "session": str(recorded[1]), "nobody": str(NOBODY)}
    fast = api.get(path.format(**ids))
    routed = api.get(path.format(**{name: value.upper() for name, value in ids.items()}))
    assert [fast.status_code, routed.status_code] == [404, 404]
    assert fast.json() == routed.json()


def test_a_fast_answer_is_counted_under_its_route(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    stream_id, session_id = recorded
    api.get(f"/hls/{stream_id}/source/index.m3u8")
    api.get(f"/hls/{stream_id}/source/{session_id}/{segment_name(1)}")
    text = api.get("/metrics").text
    for route in (
        "/hls/{stream_id}/{rendition}/index.m3u8",
        "/hls/{stream_id}/{rendition}/{session_id}/{name}",
    ):
        assert f'nebula_http_requests_total{{method="GET",route="{route}",status="200"}}' in text
