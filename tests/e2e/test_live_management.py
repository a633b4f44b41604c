"""Managing live streams with real publishers: websockets on two API processes, disconnect,
key reset, and recordings that stay separate and playable."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import ARTIFACTS
from tests.live_stack import LiveStack
from tests.media import decode, make_source, publish
from tests.services import (
    WebhookReceiver,
    free_port,
    http_status,
    nebula_process,
    settings_env,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def short_source(media_dir: Path) -> Path:
    """6 s of 360p with a 2 s GOP: enough for three segments, quick to publish."""
    return make_source(media_dir / "src360.flv", seconds=6, size="640x360", video_bitrate="800k")


@pytest.fixture(scope="module")
def second_api(live_stack: LiveStack) -> Iterator[str]:
    """Another `nebula-live api` process against the same services."""
    own = live_stack.settings.model_copy(update={"http_port": free_port()})
    url = f"http://127.0.0.1:{own.http_port}"
    with nebula_process("api", settings_env(own), ARTIFACTS / "logs" / "e2e-api-2.log"):
        wait_for(lambda: http_status(f"{url}/docs") == 200, 60, "second api")
        yield url


class EventRecorder(threading.Thread):
    """A websocket client in a thread, keeping every message until the stream has gone live
    and then idle again."""

    def __init__(self, http_url: str, stream_id: str) -> None:
        super().__init__(daemon=True)
        self.url = http_url.replace("http://", "ws://") + f"/ws/streams/{stream_id}"
        self.messages: list[dict] = []
        self.connected = threading.Event()

    def run(self) -> None:
        with connect(self.url, open_timeout=10) as ws:
            self.connected.set()
            for raw in ws:
                message = json.loads(raw)
                self.messages.append(message)
                went_live = any(m.get("status") == "live" for m in self.of_type("status"))
                if went_live and message["type"] == "status" and message["status"] == "idle":
                    return

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]


def _session_ids(stack: LiveStack, stream_id: str) -> list[str]:
    with stack.client() as client:
        page = client.get(f"/api/v1/streams/{stream_id}/sessions").json()
    return [item["id"] for item in page["items"]]


def _session(stack: LiveStack, session_id: str) -> dict:
    with stack.client() as client:
        return client.get(f"/api/v1/sessions/{session_id}").json()


def test_websocket_clients_on_two_api_processes_see_live_segments_and_idle(
    live_stack: LiveStack, second_api: str, short_source: Path
) -> None:
    stream = live_stack.create_stream("watched live")
    recorders = [EventRecorder(url, stream["id"]) for url in (live_stack.api_url, second_api)]
    for recorder in recorders:
        recorder.start()
        assert recorder.connected.wait(10)
    wait_for(lambda: all(r.messages for r in recorders), 10, "the status message on connect")

    publisher = publish(short_source, live_stack.rtmp_url(stream["stream_key"]))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    for recorder in recorders:
        recorder.join(30)
        assert not recorder.is_alive(), "no idle status arrived"
    [session_id] = _session_ids(live_stack, stream["id"])
    renditions = {r["name"] for r in _session(live_stack, session_id)["renditions"]}
    assert "source" in renditions

    for recorder in recorders:
        statuses = [m["status"] for m in recorder.of_type("status")]
        assert statuses == ["idle", "live", "idle"], statuses
        assert recorder.of_type("status")[1]["session_id"] == session_id
        segments = recorder.of_type("segment")
        assert {s["rendition"] for s in segments} >= renditions
        source = [s for s in segments if s["rendition"] == "source"]
        assert [s["sequence"] for s in source] == [0, 1, 2]
        assert all(s["uri"] and s["program_date_time"] and s["duration"] > 0 for s in source)
        assert recorder.of_type("playlist")


def test_disconnect_drops_the_publisher_and_a_new_publish_gets_its_own_recording(
    live_stack: LiveStack, source_1080p: Path
) -> None:
    stream = live_stack.create_stream("dropped")
    url = live_stack.rtmp_url(stream["stream_key"])
    first = publish(source_1080p, url)
    wait_for(lambda: len(_session_ids(live_stack, stream["id"])) == 1, 15, "first session")
    [first_id] = _session_ids(live_stack, stream["id"])
    wait_for(lambda: _session(live_stack, first_id)["segment_count"] >= 2, 20, "two segments")

    with live_stack.client() as client:
        response = client.post(f"/api/v1/streams/{stream['id']}/disconnect")
    assert response.status_code == 202, response.text
    assert response.json()["ingest_processes"] >= 1
    assert first.wait(10) != 0, "ffmpeg kept publishing after the disconnect"
    wait_for(lambda: _session(live_stack, first_id)["status"] == "ended", 3, "session ended")

    second = publish(source_1080p, url)
    assert second.wait(60) == 0, second.stderr.read().decode()
    wait_for(
        lambda: (
            _session(live_stack, _session_ids(live_stack, stream["id"])[0])["status"] == "ended"
        ),
        20,
        "second session ended",
    )
    second_id, older_id = _session_ids(live_stack, stream["id"])
    assert older_id == first_id and second_id != first_id

    first_body, second_body = _session(live_stack, first_id), _session(live_stack, second_id)
    assert 2 <= first_body["segment_count"] < 6
    assert second_body["segment_count"] == 6
    for body in (first_body, second_body):
        source = (
            body["playback_url"]
            .replace(live_stack.settings.public_http_url, live_stack.api_url)
            .replace("/master.m3u8", "/source/index.m3u8")
        )
        # VOD once its ladder work is done too: ffmpeg reads a live playlist from its edge.
        with live_stack.client() as client:
            wait_for(
                lambda url=source: "#EXT-X-ENDLIST" in client.get(url).text, 180, "VOD recording"
            )
        errors, seconds = decode(source)
        assert errors == ""
        assert abs(seconds - 2.0 * body["segment_count"]) <= 2.1


def test_a_reset_key_refuses_the_old_key_while_the_live_publisher_keeps_its_session(
    live_stack: LiveStack, short_source: Path
) -> None:
    stream = live_stack.create_stream("rotated live")
    old_url = live_stack.rtmp_url(stream["stream_key"])
    live = publish(short_source, old_url)
    wait_for(lambda: len(_session_ids(live_stack, stream["id"])) == 1, 15, "session")
    with live_stack.client() as client:
        new_key = client.post(f"/api/v1/streams/{stream['id']}/reset-key").json()["stream_key"]
    refused = publish(short_source, old_url)
    assert refused.wait(30) != 0
    assert b"publish refused" in refused.stderr.read()
    assert live.wait(60) == 0, live.stderr.read().decode()
    [session_id] = _session_ids(live_stack, stream["id"])
    wait_for(lambda: _session(live_stack, session_id)["status"] == "ended", 20, "ended")
    assert _session(live_stack, session_id)["segment_count"] == 3

    accepted = publish(short_source, live_stack.rtmp_url(new_key))
    assert accepted.wait(60) == 0, accepted.stderr.read().decode()
    assert len(_session_ids(live_stack, stream["id"])) == 2


def test_a_publish_sends_live_idle_and_session_ended_webhooks(
    celery_worker: None,
    live_stack: LiveStack,
    short_source: Path,
    webhook_receiver: WebhookReceiver,
) -> None:
    stream = live_stack.create_stream("hooked")
    publisher = publish(short_source, live_stack.rtmp_url(stream["stream_key"]))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()

    def delivered() -> list[dict]:
        return [json.loads(d.body) for d in webhook_receiver.containing(stream["id"])]

    wait_for(lambda: len(delivered()) == 3, 30, "three webhooks")
    by_type = {event["type"]: event["data"] for event in delivered()}
    [session_id] = _session_ids(live_stack, stream["id"])
    ids = {"stream_id": stream["id"], "session_id": session_id}
    assert by_type["stream.live"] == ids
    assert by_type["stream.idle"] == ids
    recording = f"{live_stack.settings.public_http_url}/hls/sessions/{session_id}/master.m3u8"
    assert by_type["session.ended"] == {**ids, "playback_url": recording}
