"""`api.playback_fast_path`: the live playlist and its segments answered past FastAPI's
router, the same as the routes answer them (bodies, errors, metrics)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api import deps
from api.app import create_app
from core.settings import Settings
from core.storage import ObjectStore
from packager.keys import segment_name
from tests.integration.test_management_api import AUTH, _add_session, _create


@pytest.fixture(scope="module")
def api(settings: Settings, store: ObjectStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AUTH, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def recorded(api: TestClient, settings: Settings, store: ObjectStore) -> tuple[str, uuid.UUID]:
    stream = _create(api, "fast path")
    started = datetime.now(UTC) - timedelta(minutes=1)
    session_id = _add_session(settings, stream["id"], started=started, segments=3, store=store)
    return stream["id"], session_id


def _routed_only() -> None:
    raise RuntimeError("a dependency of the routed path was solved")


def test_the_live_playlist_and_its_segments_skip_the_router_and_its_dependencies(
    api: TestClient, recorded: tuple[str, uuid.UUID]
) -> None:
    """With every dependency of the two routes failing, their GETs still answer: nothing
    solved them. A HEAD of the same URLs is routed, and fails."""
    stream_id, session_id = recorded
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
            assert api.head(path).status_code == 500
    finally:
        api.app.dependency_overrides.clear()


NOBODY = uuid.uuid4()


@pytest.mark.parametrize(
    "path",
    [
        "/hls/{stream}/720p/index.m3u8",  # a rendition the presentation lacks
        "/hls/{stream}/Bad..name/index.m3u8",
        "/hls/{nobody}/source/index.m3u8",
        "/hls/{stream}/source/{session}/00000099.m4s",  # no such object
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
