"""A real `nebula-live api` process whose database is away (nothing listens on its port):
requests that need it get a 503 with Retry-After and say why, not a 500, and the API keeps
answering what needs no database."""

from __future__ import annotations

import pytest

from core.settings import Settings
from tests.services import ARTIFACTS, free_port, running_api

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.mark.timeout(120)
def test_a_request_that_needs_an_absent_database_gets_a_503_with_retry_after(
    settings: Settings,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/absent"
    own = settings.model_copy(update={"http_port": free_port(), "database_url": nowhere})
    with running_api(own, ARTIFACTS / "logs" / "stores-away-api.log") as client:
        for path in ("/api/v1/streams", f"/hls/{UNKNOWN}/master.m3u8"):
            response = client.get(path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "2"
            assert "OperationalError" in response.json()["detail"]
        assert client.get("/livez").status_code == 200
