"""Names and path parts are matched whole: `$` alone lets a trailing newline through, which
once made "720p\\n" a rung name that broke the master playlist (audit #30)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings

AUTH = {"Authorization": "Bearer test-token"}
STREAM = uuid.UUID(int=7)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def test_a_rung_name_with_a_trailing_newline_is_422_naming_the_rung(api: TestClient) -> None:
    rung = {"name": "720p\n", "height": 720, "bitrate": 3_000_000}
    response = api.post("/api/v1/streams", json={"name": "newline", "ladder": [rung]})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "ladder"]
    assert error["msg"].endswith(
        "ladder[0].name must be 1-32 lowercase letters or digits and not 'source', got '720p\\n'"
    )
    fine = api.post("/api/v1/streams", json={"name": "fine", "ladder": [{**rung, "name": "720p"}]})
    assert fine.status_code == 201, fine.text


def test_a_slate_for_a_rendition_with_a_trailing_newline_is_404(api: TestClient) -> None:
    slate = f"/hls/{STREAM}/{{}}/slate/v640x360-a48000x2/init.mp4"
    assert api.get(slate.format("720p")).status_code == 200
    refused = api.get(slate.format("720p%0A"))
    assert refused.status_code == 404
    assert refused.json() == {"detail": "no slate v640x360-a48000x2/init.mp4"}
