"""Streams and sessions over REST against the real PostgreSQL, Redis and S3 server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import m3u8
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from core.db import session_scope
from core.events import CONTROL_CHANNEL
from core.models import LiveSession, Rendition, Segment, Stream
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from media.ladder import SOURCE
from packager import timeline
from packager.keys import init_name, media_key, segment_name
from packager.tasks.housekeeping import expire_recordings

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    """Rows are written here without the events the ingest sends once they are committed,
    so this API reads the version on every poll (`playlist_fresh_seconds` 0)."""
    asking = settings.model_copy(update={"playlist_fresh_seconds": 0.0})
    with TestClient(create_app(asking), headers=AUTH) as client:
        client.app.state.store.ensure_bucket()
        yield client


@pytest.fixture
def control_messages(settings: Settings) -> Iterator[redis.client.PubSub]:
    pubsub = redis.Redis.from_url(settings.redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CONTROL_CHANNEL)
    yield pubsub
    pubsub.close()


def _next_control(pubsub: redis.client.PubSub) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # The subscribe confirmation also comes out as None: keep reading.
        message = pubsub.get_message(timeout=1)
        if message is not None:
            return json.loads(message["data"])
    raise AssertionError("no control message was published")


def _create(api: TestClient, name: str = "stream") -> dict:
    response = api.post("/api/v1/streams", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def _set_status(settings: Settings, stream_id: str, status: str) -> None:
    with session_scope(settings.database_url) as db:
        db.get(Stream, uuid.UUID(stream_id)).status = status


def _add_session(
    settings: Settings,
    stream_id: str,
    *,
    started: datetime,
    segments: int,
    status: str = "ended",
    gop_seconds: float = 2.0,
    store: ObjectStore | None = None,
) -> uuid.UUID:
    """A session as the ingest leaves it: rows for a source rendition and its segments, on
    the stream's timeline (the stream's first session starts its presentation, later ones
    join it and continue its numbers)."""
    sid = uuid.UUID(stream_id)
    with session_scope(settings.database_url) as db:
        stream = db.get(Stream, sid, with_for_update=True)
        first = timeline.next_sequence(db, sid)
        if stream.presentation_sequence is None or stream.presentation_ended_at is not None:
            stream.presentation_sequence, stream.target_duration = first, 2
            stream.presentation_ended_at = None
        if status != "live":  # its publisher left long ago: the stream's playlists ended
            stream.presentation_ended_at = started + timedelta(seconds=2 * segments)
        session = LiveSession(
            presentation_sequence=stream.presentation_sequence,
            target_duration=2,
            stream_id=sid,
            protocol="rtmp",
            status=status,
            started_at=started,
            ended_at=None if status == "live" else started + timedelta(seconds=2 * segments),
            media_info={"video": {"codec": "h264", "width": 640, "height": 360}},
            gop_seconds=gop_seconds,
            bytes_ingested=1000 * segments,
        )
        db.add(session)
        db.flush()
        rendition = Rendition(
            session_id=session.id,
            name=SOURCE,
            width=640,
            height=360,
            frame_rate=30.0,
            codecs="avc1.64001e,mp4a.40.2",
            bandwidth=800_000,
            average_bandwidth=700_000,
            media_bytes=1000 * segments,
            media_seconds=2.0 * segments,
        )
        db.add(rendition)
        db.flush()
        init_key = media_key(sid, SOURCE, session.id, init_name(0))
        for n in range(segments):
            key = media_key(sid, SOURCE, session.id, segment_name(first + n))
            db.add(
                Segment(
                    rendition_id=rendition.id,
                    sequence=first + n,
                    duration=2.0,
                    program_date_time=started + timedelta(seconds=2 * n),
                    object_key=key,
                    init_key=init_key,
                    size_bytes=1000,
                )
            )
            if store is not None:
                store.put_bytes(key, b"segment", "video/iso.segment")
        if store is not None:
            store.put_bytes(init_key, b"init", "video/mp4")
        return session.id


ENDPOINTS = [
    ("get", "/api/v1/streams"),
    ("post", "/api/v1/streams"),
    ("get", "/api/v1/streams/{id}"),
    ("patch", "/api/v1/streams/{id}"),
    ("delete", "/api/v1/streams/{id}"),
    ("post", "/api/v1/streams/{id}/reset-key"),
    ("post", "/api/v1/streams/{id}/disconnect"),
    ("get", "/api/v1/streams/{id}/sessions"),
    ("get", "/api/v1/sessions/{id}"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_every_management_endpoint_is_401_without_the_right_token(
    api: TestClient, method: str, path: str, headers: dict
) -> None:
    url = path.format(id=uuid.uuid4())
    response = api.request(method, url, headers={"Authorization": "", **headers}, json={})
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"), [e for e in ENDPOINTS if "{id}" in e[1]], ids=lambda v: str(v)
)
def test_every_endpoint_naming_an_unknown_id_is_404(
    api: TestClient, method: str, path: str
) -> None:
    missing = uuid.uuid4()
    response = api.request(method, path.format(id=missing), json={})
    assert response.status_code == 404
    assert str(missing) in response.json()["detail"]


def test_a_stream_with_an_empty_name_is_422_naming_the_field(api: TestClient) -> None:
    response = api.post("/api/v1/streams", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_an_id_that_is_not_a_uuid_is_422(api: TestClient) -> None:
    response = api.get("/api/v1/streams/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "stream_id"]


def test_streams_are_listed_newest_first_in_pages(api: TestClient) -> None:
    created = [_create(api, f"paged {n}")["id"] for n in range(5)]
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = api.get("/api/v1/streams", params={"limit": 2, "offset": offset}).json()
        assert page["limit"] == 2 and len(page["items"]) <= 2
        assert all(item["stream_key"] is None for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        offset = page["next_offset"]
    assert len(seen) == page["total"] == len(set(seen))
    mine = [s for s in seen if s in created]
    assert mine == created[::-1]


def test_a_page_size_out_of_range_is_422(api: TestClient) -> None:
    response = api.get("/api/v1/streams", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    assert api.get("/api/v1/streams", params={"limit": 101}).status_code == 422


def test_the_stream_list_filters_by_status(api: TestClient, settings: Settings) -> None:
    live = _create(api, "filter live")
    _set_status(settings, live["id"], "live")
    items = api.get("/api/v1/streams", params={"status": "live", "limit": 100}).json()["items"]
    assert live["id"] in [i["id"] for i in items]
    assert {i["status"] for i in items} == {"live"}
    assert api.get("/api/v1/streams", params={"status": "bogus"}).status_code == 422


def test_get_returns_the_stream_without_its_key(api: TestClient) -> None:
    stream = _create(api, "fetch me")
    fetched = api.get(f"/api/v1/streams/{stream['id']}").json()
    assert fetched["name"] == "fetch me"
    assert fetched["stream_key"] is None
    assert fetched["status"] == "idle"
    assert fetched["ladder"] is None


def test_patch_renames_and_sets_a_ladder_and_null_restores_the_default(api: TestClient) -> None:
    stream = _create(api, "before")
    ladder = [{"name": "540p", "height": 540, "bitrate": 2_000_000}]
    response = api.patch(
        f"/api/v1/streams/{stream['id']}", json={"name": "after", "ladder": ladder}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["ladder"]) == ("after", ladder)
    response = api.patch(f"/api/v1/streams/{stream['id']}", json={"ladder": None})
    assert (response.json()["name"], response.json()["ladder"]) == ("after", None)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"ladder": [{"name": "720p", "height": 721, "bitrate": 3_000_000}]}, "ladder"),
        ({"ladder": [{"name": "source", "height": 720, "bitrate": 3_000_000}]}, "ladder"),
        (
            {"ladder": [{"name": f"r{i}", "height": 360, "bitrate": 800_000} for i in range(9)]},
            "ladder",
        ),
        ({"name": ""}, "name"),
        ({"enabled": "maybe"}, "enabled"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_patch_is_422_naming_the_field(api: TestClient, body: dict, loc: str) -> None:
    stream = _create(api)
    response = api.patch(f"/api/v1/streams/{stream['id']}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", loc]


def test_a_disabled_stream_refuses_publishes_until_enabled_again(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "switch")
    response = api.patch(f"/api/v1/streams/{stream['id']}", json={"enabled": False})
    assert response.json()["status"] == "disabled"
    with pytest.raises(sessions.PublishRefusedError, match="stream is disabled"):
        sessions.open_publish(settings.database_url, stream["stream_key"], "rtmp", 0)
    response = api.patch(f"/api/v1/streams/{stream['id']}", json={"enabled": True})
    assert response.json()["status"] == "idle"
    grant = sessions.open_publish(settings.database_url, stream["stream_key"], "rtmp", 0)
    assert str(grant.stream_id) == stream["id"]
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)


def test_a_stream_with_an_empty_ladder_is_published_without_transcoding(
    api: TestClient, settings: Settings
) -> None:
    response = api.post("/api/v1/streams", json={"name": "source only", "ladder": []})
    assert response.status_code == 201, response.text
    source_only = response.json()
    assert source_only["ladder"] == []
    bad = api.post("/api/v1/streams", json={"name": "x", "ladder": [{"name": "720p"}]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "ladder"]
    grant = sessions.open_publish(settings.database_url, source_only["stream_key"], "rtmp", 0)
    assert grant.transcode is False
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)
    default = _create(api, "default ladder")
    grant = sessions.open_publish(settings.database_url, default["stream_key"], "rtmp", 0)
    assert grant.transcode is True
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)


def test_disabling_a_live_stream_asks_the_ingest_to_drop_its_publisher(
    api: TestClient, settings: Settings, control_messages
) -> None:
    stream = _create(api, "live then disabled")
    _set_status(settings, stream["id"], "live")
    response = api.patch(f"/api/v1/streams/{stream['id']}", json={"enabled": False})
    assert response.json()["status"] == "disabled"
    assert _next_control(control_messages) == {"action": "disconnect", "stream_id": stream["id"]}


def test_reset_key_issues_a_new_key_and_the_old_one_is_refused_at_once(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "rotated")
    response = api.post(f"/api/v1/streams/{stream['id']}/reset-key")
    assert response.status_code == 200
    new_key = response.json()["stream_key"]
    assert new_key and new_key != stream["stream_key"]
    assert response.json()["rtmp_url"].endswith(f"/live/{new_key}")
    with pytest.raises(sessions.PublishRefusedError, match="unknown stream key"):
        sessions.open_publish(settings.database_url, stream["stream_key"], "rtmp", 0)
    grant = sessions.open_publish(settings.database_url, new_key, "rtmp", 0)
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)


def test_disconnect_of_a_stream_that_is_not_live_is_409(api: TestClient) -> None:
    stream = _create(api, "quiet")
    response = api.post(f"/api/v1/streams/{stream['id']}/disconnect")
    assert response.status_code == 409
    assert response.json()["detail"] == f"stream {stream['id']} is idle, not live"


def test_disconnect_of_a_live_stream_publishes_a_control_message(
    api: TestClient, settings: Settings, control_messages
) -> None:
    stream = _create(api, "to drop")
    _set_status(settings, stream["id"], "live")
    response = api.post(f"/api/v1/streams/{stream['id']}/disconnect")
    assert response.status_code == 202
    assert response.json()["ingest_processes"] >= 1  # this test, and any running ingest
    assert _next_control(control_messages) == {"action": "disconnect", "stream_id": stream["id"]}


def test_deleting_a_live_stream_is_409_without_force(api: TestClient, settings: Settings) -> None:
    stream = _create(api, "busy")
    _set_status(settings, stream["id"], "live")
    response = api.delete(f"/api/v1/streams/{stream['id']}")
    assert response.status_code == 409
    assert "?force=true" in response.json()["detail"]
    assert api.get(f"/api/v1/streams/{stream['id']}").status_code == 200


def _recorded_stream(api: TestClient, settings: Settings, name: str) -> tuple[dict, uuid.UUID]:
    """A stream with one ended session whose objects are in the bucket."""
    stream = _create(api, name)
    session_id = _add_session(
        settings, stream["id"], started=datetime.now(UTC), segments=2, store=api.app.state.store
    )
    return stream, session_id


def test_delete_removes_the_stream_its_sessions_and_its_objects(
    api: TestClient, settings: Settings
) -> None:
    store: ObjectStore = api.app.state.store
    stream, session_id = _recorded_stream(api, settings, "doomed")
    assert list(store.list_keys(f"hls/{stream['id']}/"))
    assert api.delete(f"/api/v1/streams/{stream['id']}").status_code == 204
    assert api.get(f"/api/v1/streams/{stream['id']}").status_code == 404
    assert api.get(f"/api/v1/sessions/{session_id}").status_code == 404
    assert list(store.list_keys(f"hls/{stream['id']}/")) == []


def test_a_delete_the_object_store_fails_is_503_and_keeps_the_stream_for_a_retry(
    api: TestClient, settings: Settings
) -> None:
    store: ObjectStore = api.app.state.store
    stream, session_id = _recorded_stream(api, settings, "kept through a storage fault")
    objects = list(store.list_keys(f"hls/{stream['id']}/"))
    unreachable = settings.model_copy(update={"s3_endpoint": "127.0.0.1:9"})
    with TestClient(create_app(unreachable), headers=AUTH) as faulty:
        response = faulty.delete(f"/api/v1/streams/{stream['id']}")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith(f"stream {stream['id']} was not deleted: the object store failed")
    assert detail.endswith("send the delete again")
    assert api.get(f"/api/v1/streams/{stream['id']}").status_code == 200
    assert api.get(f"/api/v1/sessions/{session_id}").status_code == 200
    assert list(store.list_keys(f"hls/{stream['id']}/")) == objects
    assert api.delete(f"/api/v1/streams/{stream['id']}").status_code == 204
    assert api.get(f"/api/v1/streams/{stream['id']}").status_code == 404
    assert list(store.list_keys(f"hls/{stream['id']}/")) == []


def test_force_delete_of_a_live_stream_disconnects_it_first(
    api: TestClient, settings: Settings, control_messages
) -> None:
    stream = _create(api, "forced")
    _set_status(settings, stream["id"], "live")
    response = api.delete(f"/api/v1/streams/{stream['id']}", params={"force": "true"})
    assert response.status_code == 204
    assert _next_control(control_messages) == {"action": "disconnect", "stream_id": stream["id"]}
    assert api.get(f"/api/v1/streams/{stream['id']}").status_code == 404


def test_sessions_are_listed_newest_first_in_pages(api: TestClient, settings: Settings) -> None:
    stream = _create(api, "sessions")
    start = datetime.now(UTC) - timedelta(hours=1)
    made = [
        _add_session(settings, stream["id"], started=start + timedelta(minutes=n), segments=n + 1)
        for n in range(3)
    ]
    first = api.get(f"/api/v1/streams/{stream['id']}/sessions", params={"limit": 2}).json()
    assert (first["total"], first["next_offset"]) == (3, 2)
    second = api.get(
        f"/api/v1/streams/{stream['id']}/sessions", params={"limit": 2, "offset": 2}
    ).json()
    assert second["next_offset"] is None
    listed = [item["id"] for item in first["items"] + second["items"]]
    assert listed == [str(s) for s in reversed(made)]
    assert [item["segment_count"] for item in first["items"]] == [3, 2]


def test_a_session_reports_its_media_renditions_and_recording(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "one session")
    started = datetime.now(UTC) - timedelta(minutes=5)
    session_id = _add_session(settings, stream["id"], started=started, segments=4)
    body = api.get(f"/api/v1/sessions/{session_id}").json()
    assert body["status"] == "ended"
    assert body["stream_id"] == stream["id"]
    assert body["duration_seconds"] == 8.0
    assert body["segment_count"] == 4
    assert body["bytes_ingested"] == 4000
    assert body["media_info"]["video"]["codec"] == "h264"
    assert body["renditions"] == [
        {
            "name": "source",
            "width": 640,
            "height": 360,
            "frame_rate": 30.0,
            "codecs": "avc1.64001e,mp4a.40.2",
            "bandwidth": 800_000,
            "average_bandwidth": 700_000,
            "segment_count": 4,
        }
    ]
    assert body["warnings"] == []
    assert body["playback_url"] == (
        f"{settings.public_http_url}/hls/sessions/{session_id}/master.m3u8"
    )


def test_a_session_with_a_long_gop_warns_to_set_a_2_second_keyframe_interval(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "long gop")
    session_id = _add_session(
        settings, stream["id"], started=datetime.now(UTC), segments=1, gop_seconds=5.0
    )
    [warning] = api.get(f"/api/v1/sessions/{session_id}").json()["warnings"]
    assert "every 5 s" in warning and "keyframe interval to 2 s" in warning


def test_an_open_gop_source_warns_and_claims_no_independent_segments_but_its_rungs_do(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "open gop")
    session_id = _add_session(settings, stream["id"], started=datetime.now(UTC), segments=2)
    for path in ("master.m3u8", "source/index.m3u8"):
        assert "#EXT-X-INDEPENDENT-SEGMENTS" in api.get(f"/hls/{stream['id']}/{path}").text
    with session_scope(settings.database_url) as db:
        session = db.get(LiveSession, session_id)
        session.renditions[0].codecs = "hvc1.1.6.L93.B0,mp4a.40.2"
        db.add(Rendition(session_id=session_id, name="360p", height=360, codecs="avc1.64001e"))
    # An HEVC source may turn out open-GOP after the master was read once: it never claims.
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in api.get(f"/hls/{stream['id']}/master.m3u8").text
    source = api.get(f"/hls/{stream['id']}/source/index.m3u8").text
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in source
    assert api.get(f"/api/v1/sessions/{session_id}").json()["warnings"] == []
    with session_scope(settings.database_url) as db:
        db.get(LiveSession, session_id).open_gop = True

    [warning] = api.get(f"/api/v1/sessions/{session_id}").json()["warnings"]
    assert "open-GOP" in warning and "open-gop=0" in warning
    for path in (
        f"/hls/{stream['id']}/master.m3u8",
        f"/hls/{stream['id']}/source/index.m3u8",
        f"/hls/sessions/{session_id}/master.m3u8",
        f"/hls/sessions/{session_id}/source/index.m3u8",
    ):
        assert "#EXT-X-INDEPENDENT-SEGMENTS" not in api.get(path).text, path
    # The rungs are encoded here with closed GOPs: theirs still says so.
    rung = api.get(f"/hls/sessions/{session_id}/360p/index.m3u8").text
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in rung


def test_keyframes_further_apart_than_the_presentations_target_duration_are_warned_of(
    api: TestClient, settings: Settings
) -> None:
    stream, now = _create(api, "gop grew"), datetime.now(UTC)
    within, past = (
        _add_session(settings, stream["id"], started=now, segments=1, gop_seconds=gop)
        for gop in (2.4, 2.5)
    )
    with session_scope(settings.database_url) as db:
        db.execute(
            update(LiveSession).where(LiveSession.id.in_([within, past])).values(target_duration=2)
        )
    assert api.get(f"/api/v1/sessions/{within}").json()["warnings"] == []
    [warning] = api.get(f"/api/v1/sessions/{past}").json()["warnings"]
    assert "up to 2.5 s apart" in warning and "2 s target duration" in warning


def test_an_ended_sessions_recording_lists_every_segment_as_vod(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "recorded")
    count = settings.playlist_window + 5
    store: ObjectStore = api.app.state.store
    session_id = _add_session(
        settings, stream["id"], started=datetime.now(UTC), segments=count, store=store
    )
    _add_session(settings, stream["id"], started=datetime.now(UTC), segments=1, status="live")
    master = m3u8.loads(api.get(f"/hls/sessions/{session_id}/master.m3u8").text)
    assert [p.uri for p in master.playlists] == ["source/index.m3u8"]
    response = api.get(f"/hls/sessions/{session_id}/source/index.m3u8")
    assert "max-age=3600" in response.headers["cache-control"]
    playlist = m3u8.loads(response.text)
    assert playlist.is_endlist and playlist.playlist_type == "vod"
    assert [s.uri for s in playlist.segments] == [segment_name(n) for n in range(count)]
    assert playlist.segments[0].init_section.uri == init_name(0)
    media = api.get(f"/hls/sessions/{session_id}/source/{segment_name(0)}")
    assert (media.status_code, media.content) == (200, b"segment")
    assert api.get(f"/hls/sessions/{session_id}/source/{init_name(0)}").content == b"init"


def test_a_live_sessions_recording_is_an_event_playlist_without_an_end(
    api: TestClient, settings: Settings
) -> None:
    stream = _create(api, "recording live")
    session_id = _add_session(
        settings, stream["id"], started=datetime.now(UTC), segments=3, status="live"
    )
    response = api.get(f"/hls/sessions/{session_id}/source/index.m3u8")
    playlist = m3u8.loads(response.text)
    assert not playlist.is_endlist and playlist.playlist_type == "event"
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path", ["master.m3u8", "source/index.m3u8", "720p/index.m3u8", "source/00000000.m4s"]
)
def test_a_recording_of_an_unknown_session_is_404(api: TestClient, path: str) -> None:
    assert api.get(f"/hls/sessions/{uuid.uuid4()}/{path}").status_code == 404


def test_retention_deletes_old_recordings_and_keeps_recent_and_live_ones(
    api: TestClient, settings: Settings
) -> None:
    store: ObjectStore = api.app.state.store
    stream = _create(api, "retention")
    now = datetime.now(UTC)
    old = _add_session(
        settings, stream["id"], started=now - timedelta(days=40), segments=2, store=store
    )
    recent = _add_session(
        settings, stream["id"], started=now - timedelta(days=1), segments=2, store=store
    )
    live = _add_session(
        settings,
        stream["id"],
        started=now - timedelta(days=50),
        segments=1,
        status="live",
        store=store,
    )
    assert expire_recordings(settings.database_url, store, timedelta(days=30)) >= 1
    assert api.get(f"/api/v1/sessions/{old}").status_code == 404
    assert api.get(f"/api/v1/sessions/{recent}").status_code == 200
    assert api.get(f"/api/v1/sessions/{live}").status_code == 200
    keys = {o.key for o in store.list_keys(f"hls/{stream['id']}/")}
    assert not any(str(old) in k for k in keys)
    assert any(str(recent) in k for k in keys) and any(str(live) in k for k in keys)
