"""OBS goes live: the real ffmpeg CLI publishes RTMP, ffmpeg and ffprobe play the HLS we serve."""

from __future__ import annotations

import signal
import socket
import time
import uuid

import m3u8
import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment, SegmentStatus
from core.storage import ObjectStore
from media.demux.flv import iter_flv_tags
from tests.hls_poller import CheckedHls
from tests.live_stack import GRACE_SECONDS, LiveStack
from tests.media import (
    audio_ahead_of_the_first_keyframe,
    decode,
    make_source,
    media_duration,
    publish,
    publish_flv_tags,
)
from tests.services import wait_for

pytestmark = pytest.mark.e2e


def _sessions(stack: LiveStack, stream_id: str) -> list[LiveSession]:
    with session_scope(stack.settings.database_url) as db:
        return list(
            db.scalars(
                select(LiveSession)
                .where(LiveSession.stream_id == uuid.UUID(stream_id))
                .order_by(LiveSession.started_at)
            )
        )


def _source_segments(stack: LiveStack, session_id: uuid.UUID) -> list[Segment]:
    with session_scope(stack.settings.database_url) as db:
        return list(
            db.scalars(
                select(Segment)
                .join(Rendition)
                .where(Rendition.session_id == session_id, Rendition.name == "source")
                .order_by(Segment.sequence)
            )
        )


def _media_playlist(hls: CheckedHls, stream_id: str) -> m3u8.M3U8:
    return hls.playlist(f"/hls/{stream_id}/source/index.m3u8")


def _wait_for_segments(stack: LiveStack, stream_id: str, count: int) -> None:
    def enough() -> bool:
        sessions = _sessions(stack, stream_id)
        return bool(sessions) and len(_source_segments(stack, sessions[-1].id)) >= count

    wait_for(enough, 20, f"{count} segments")


def _wait_ended(hls: CheckedHls, stream_id: str, timeout: float = 30) -> None:
    wait_for(
        lambda: _media_playlist(hls, stream_id).is_endlist,
        timeout,
        "EXT-X-ENDLIST in the media playlist",
    )


def test_an_ffmpeg_publish_plays_back_as_hls_with_the_published_duration(
    live_stack: LiveStack, hls: CheckedHls, source_1080p
) -> None:
    stream = live_stack.create_stream("first light")
    assert stream["rtmp_url"].endswith(f"/live/{stream['stream_key']}")
    assert stream["playback_url"].endswith(f"/hls/{stream['id']}/master.m3u8")
    master_path = f"/hls/{stream['id']}/master.m3u8"
    publisher = publish(source_1080p, live_stack.rtmp_url(stream["stream_key"]))

    with hls.watch(master_path), live_stack.client() as client:
        wait_for(
            lambda: client.get(f"/api/v1/streams/{stream['id']}").json()["status"] == "live",
            15,
            "stream live",
        )
        wait_for(lambda: hls.get(master_path).status_code == 200, 15, "master playlist")
        master_response = hls.get(master_path)
        live_playlist = hls.get(f"/hls/{stream['id']}/source/index.m3u8")
        assert master_response.headers["content-type"] == "application/vnd.apple.mpegurl"
        assert live_playlist.headers["cache-control"] == "no-cache"
        assert "#EXT-X-ENDLIST" not in live_playlist.text
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
        _wait_ended(hls, stream["id"])

    # The master lists the whole ladder planned for the 1080p source from the start, whether
    # or not a worker has made any rung segment yet (this test needs none).
    master = m3u8.loads(master_response.text)
    assert sorted(p.uri for p in master.playlists) == [
        "360p/index.m3u8",
        "480p/index.m3u8",
        "720p/index.m3u8",
        "source/index.m3u8",
    ]
    [variant] = [p for p in master.playlists if p.uri == "source/index.m3u8"]
    assert variant.stream_info.resolution == (1920, 1080)
    assert variant.stream_info.codecs == "avc1.640028,mp4a.40.2"
    assert variant.stream_info.bandwidth > 1_000_000
    assert variant.stream_info.frame_rate == 30.0

    playlist = _media_playlist(hls, stream["id"])
    text = "\n".join(["#EXT-X-VERSION:7", "#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME"])
    raw = hls.get(f"/hls/{stream['id']}/source/index.m3u8").text
    for tag in text.splitlines():
        assert tag in raw
    durations = [s.duration for s in playlist.segments]
    assert len(durations) == 6
    assert all(abs(d - 2.0) <= 0.1 for d in durations[:-1]), durations
    assert all(s.program_date_time is not None for s in playlist.segments)

    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/source/index.m3u8")
    assert errors == ""
    assert abs(decoded - media_duration(source_1080p)) <= 0.3, decoded

    [session] = _sessions(live_stack, stream["id"])
    assert session.status == "ended"
    assert session.ended_at is not None
    video, audio = session.media_info["video"], session.media_info["audio"]
    assert (video["codec"], video["profile"], video["width"], video["height"]) == (
        "h264",
        "High",
        1920,
        1080,
    )
    assert video["frame_rate"] == 30
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 48000, 2)
    assert session.gop_seconds == pytest.approx(2.0, abs=0.05)
    assert session.bytes_ingested > 1_000_000
    with live_stack.client() as client:
        assert client.get(f"/api/v1/streams/{stream['id']}").json()["status"] == "idle"
        segment_response = client.get(f"/hls/{stream['id']}/source/{playlist.segments[0].uri}")
    assert segment_response.headers["content-type"] == "video/iso.segment"
    assert "immutable" in segment_response.headers["cache-control"]
    # The bucket holds the same playlists, for a CDN in front of it.
    store = ObjectStore.from_settings(live_stack.settings)
    mirrored = store.get_bytes(f"hls/{stream['id']}/source/index.m3u8").decode()
    assert mirrored == raw
    final_master = hls.get(master_path).text
    assert store.get_bytes(f"hls/{stream['id']}/master.m3u8").decode() == final_master


def test_a_wrong_key_is_refused_with_badname(live_stack: LiveStack, source_1080p) -> None:
    publisher = publish(source_1080p, live_stack.rtmp_url("not-a-real-key"))
    assert publisher.wait(30) != 0
    assert b"publish refused: unknown stream key" in publisher.stderr.read()


def test_a_second_publisher_on_a_live_key_is_refused_and_the_first_keeps_going(
    live_stack: LiveStack, hls: CheckedHls, source_1080p
) -> None:
    stream = live_stack.create_stream("contested")
    first = publish(source_1080p, live_stack.rtmp_url(stream["stream_key"]))
    wait_for(lambda: len(_sessions(live_stack, stream["id"])) == 1, 15, "first session")
    second = publish(source_1080p, live_stack.rtmp_url(stream["stream_key"]))
    assert second.wait(30) != 0
    assert first.wait(60) == 0
    _wait_ended(hls, stream["id"])
    [session] = _sessions(live_stack, stream["id"])
    assert len(_source_segments(live_stack, session.id)) == 6


def test_garbage_on_the_rtmp_port_does_not_disturb_a_running_publish(
    live_stack: LiveStack, hls: CheckedHls, source_1080p
) -> None:
    stream = live_stack.create_stream("resilient")
    publisher = publish(source_1080p, live_stack.rtmp_url(stream["stream_key"]))
    wait_for(lambda: len(_sessions(live_stack, stream["id"])) == 1, 15, "session")
    garbage = [
        b"\x03" + bytes(range(256)) * 8,  # a handshake that never completes properly
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # the wrong protocol
        b"\x06" * 3000,  # a wrong RTMP version
    ]
    for payload in garbage * 3:
        with socket.create_connection(("127.0.0.1", live_stack.settings.rtmp_port), 5) as sock:
            sock.sendall(payload)
            time.sleep(0.1)
    assert publisher.wait(60) == 0
    _wait_ended(hls, stream["id"])
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/source/index.m3u8")
    assert errors == ""
    assert abs(decoded - media_duration(source_1080p)) <= 0.3


def test_a_publisher_killed_mid_stream_ends_its_session_after_the_grace_window(
    live_stack: LiveStack, hls: CheckedHls, source_1080p
) -> None:
    stream = live_stack.create_stream("crash")
    publisher = publish(source_1080p, live_stack.rtmp_url(stream["stream_key"]))
    with hls.watch(f"/hls/{stream['id']}/master.m3u8"):
        _wait_for_segments(live_stack, stream["id"], 2)
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(10)
        _wait_ended(hls, stream["id"], timeout=GRACE_SECONDS + 10)
    [session] = _sessions(live_stack, stream["id"])
    assert session.status == "ended"
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/source/index.m3u8")
    assert errors == ""
    assert decoded >= 4.0


def test_a_reconnect_within_the_grace_window_continues_one_session_with_a_discontinuity(
    live_stack: LiveStack, hls: CheckedHls, source_1080p
) -> None:
    stream = live_stack.create_stream("flaky uplink")
    url = live_stack.rtmp_url(stream["stream_key"])
    dropped = publish(source_1080p, url)
    with hls.watch(f"/hls/{stream['id']}/master.m3u8"):
        _wait_for_segments(live_stack, stream["id"], 2)
        dropped.send_signal(signal.SIGKILL)  # a network drop: no unpublish is sent
        dropped.wait(10)
        reconnected = publish(source_1080p, url)
        assert reconnected.wait(60) == 0
        _wait_ended(hls, stream["id"])

    [session] = _sessions(live_stack, stream["id"])
    segments = _source_segments(live_stack, session.id)
    assert [s.sequence for s in segments] == list(range(len(segments)))
    # The reconnected publish starts a discontinuity; if the drop outlasted a segment's
    # time the stream listed a slate in between, which starts one of its own.
    slate = any(s.status == SegmentStatus.GAP for s in segments)
    assert sum(s.discontinuity for s in segments) == 1 + slate
    assert len({s.init_key for s in segments}) == 2
    raw = hls.get(f"/hls/{stream['id']}/source/index.m3u8").text
    assert raw.count("#EXT-X-DISCONTINUITY\n") == 1 + slate
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/source/index.m3u8")
    assert errors == ""
    assert decoded >= media_duration(source_1080p) + 3.5


def test_audio_stamped_before_the_first_keyframe_does_not_end_the_publish(
    live_stack: LiveStack, hls: CheckedHls, media_dir
) -> None:
    source = make_source(media_dir / "src360-6s.flv", seconds=6, size="640x360", gop=60)
    stream = live_stack.create_stream("loose interleaving")
    tags = audio_ahead_of_the_first_keyframe(iter_flv_tags(source.read_bytes()), 100)
    publish_flv_tags(live_stack.settings.rtmp_port, stream["stream_key"], tags)
    _wait_ended(hls, stream["id"], timeout=GRACE_SECONDS + 20)

    [session] = _sessions(live_stack, stream["id"])
    assert session.status == "ended" and session.error is None
    assert [s.sequence for s in _source_segments(live_stack, session.id)] == [0, 1, 2]
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/master.m3u8")
    assert errors == ""
    assert abs(decoded - media_duration(source)) <= 0.3, decoded
