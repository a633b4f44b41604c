"""`/ws/streams/{id}` on an in-process app: the connect message, Redis fan-out, close codes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.ws import Subscriber
from core.events import SegmentEvent, publish_event
from core.settings import Settings
from tests.services import wait_for

AUTH = {"Authorization": "Bearer test-token"}
SESSION = uuid.UUID(int=1)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=AUTH) as client:
        deadline = time.monotonic() + 10
        while not client.app.state.hub.subscribed.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client


def test_an_unknown_stream_closes_with_4404(api: TestClient) -> None:
    for stream_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with (
            api.websocket_connect(f"/ws/streams/{stream_id}") as ws,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            ws.receive_text()
        assert closed.value.code == 4404
        assert closed.value.reason == f"stream {stream_id} not found"


def _segment(stream_id: str, sequence: int) -> SegmentEvent:
    uri = f"source/{sequence:08d}.m4s"
    return SegmentEvent(uuid.UUID(stream_id), SESSION, "source", sequence, 2.0, uri, None)


def test_a_client_gets_the_current_status_then_the_streams_events(
    api: TestClient, settings: Settings
) -> None:
    stream = api.post("/api/v1/streams", json={"name": "watched"}).json()
    other = api.post("/api/v1/streams", json={"name": "unwatched"}).json()
    publisher = redis.Redis.from_url(settings.redis_url)
    with api.websocket_connect(f"/ws/streams/{stream['id']}") as ws:
        first = json.loads(ws.receive_text())
        assert first == {
            "type": "status",
            "stream_id": stream["id"],
            "status": "idle",
            "session_id": None,
        }
        publish_event(publisher, _segment(other["id"], 99))
        publish_event(publisher, _segment(stream["id"], 7))
        message = json.loads(ws.receive_text())
    assert message == {
        "type": "segment",
        "stream_id": stream["id"],
        "session_id": str(SESSION),
        "rendition": "source",
        "sequence": 7,
        "duration": 2.0,
        "uri": "source/00000007.m4s",
        "program_date_time": None,
    }
    wait_for(lambda: api.app.state.hub.client_count == 0, 5, "the client to leave the hub")


def test_a_quiet_connection_gets_pings(settings: Settings) -> None:
    quick = settings.model_copy(update={"ws_ping_seconds": 0.2})
    with TestClient(create_app(quick), headers=AUTH) as client:
        stream = client.post("/api/v1/streams", json={"name": "quiet"}).json()
        with client.websocket_connect(f"/ws/streams/{stream['id']}") as ws:
            assert json.loads(ws.receive_text())["type"] == "status"
            assert json.loads(ws.receive_text()) == {"type": "ping"}


def test_a_subscriber_that_falls_behind_is_marked_overflowed_not_blocking() -> None:
    async def scenario() -> Subscriber:
        subscriber = Subscriber("s", asyncio.Queue(2))
        for n in range(5):
            subscriber.offer(str(n))
        return subscriber

    subscriber = asyncio.run(scenario())
    assert subscriber.overflowed.is_set()
    assert subscriber.queue.qsize() == 2
