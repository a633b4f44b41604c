"""Adaptive bitrate end to end: ffmpeg publishes RTMP, workers build the ladder, ffmpeg plays it."""

from __future__ import annotations

import io
from pathlib import Path

import av
import m3u8
import pytest

from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack
from tests.media import decode, make_source, probe, publish
from tests.services import wait_for

pytestmark = pytest.mark.e2e

ONE_FRAME_TICKS = 3000  # at 30 fps on the 90 kHz clock


def _get(stack: LiveStack, path: str) -> bytes:
    with stack.client() as client:
        response = client.get(path)
    assert response.status_code == 200, (path, response.text)
    return response.content


def _master(hls: CheckedHls, stream_id: str) -> m3u8.M3U8:
    return hls.playlist(f"/hls/{stream_id}/master.m3u8")


def _media(hls: CheckedHls, stream_id: str, name: str) -> m3u8.M3U8:
    return hls.playlist(f"/hls/{stream_id}/{name}/index.m3u8")


def _first_master(hls: CheckedHls, stream_id: str) -> m3u8.M3U8:
    """The first master a player can fetch, polled from the moment the publish starts."""
    served: list[str] = []

    def fetched() -> bool:
        response = hls.get(f"/hls/{stream_id}/master.m3u8")
        if response.status_code == 200:
            served.append(response.text)
        else:
            assert response.status_code == 404, response.text
        return bool(served)

    wait_for(fetched, 30, "the first master")
    return m3u8.loads(served[0])


def _publish_and_wait_for_ladder(
    stack: LiveStack, hls: CheckedHls, source: Path, rungs: list[str]
) -> tuple[str, m3u8.M3U8]:
    """Publish the whole file, watching the playlists, then wait until every rendition is
    complete (EXT-X-ENDLIST). Returns the stream and the first master served while live."""
    stream = stack.create_stream("ladder")
    publisher = publish(source, stack.rtmp_url(stream["stream_key"]))
    first_master = _first_master(hls, stream["id"])

    def complete() -> bool:
        names = [p.uri.split("/")[0] for p in _master(hls, stream["id"]).playlists]
        return sorted(names) == sorted(["source", *rungs]) and all(
            _media(hls, stream["id"], name).is_endlist for name in names
        )

    with hls.watch(f"/hls/{stream['id']}/master.m3u8"):
        assert publisher.wait(90) == 0, publisher.stderr.read().decode()
        wait_for(complete, 240, f"every rendition of {['source', *rungs]} ended")
    return stream["id"], first_master


def _segment_starts(stack: LiveStack, hls: CheckedHls, stream_id: str, name: str) -> list[int]:
    """The first video decode time (tfdt) of every segment, read from the served bytes."""
    playlist = _media(hls, stream_id, name)
    base = f"/hls/{stream_id}/{name}/"
    starts = []
    for segment in playlist.segments:
        init = _get(stack, base + segment.init_section.uri)
        data = _get(stack, base + segment.uri)
        with av.open(io.BytesIO(init + data), format="mp4") as container:
            first = next(p for p in container.demux(container.streams.video[0]) if p.size)
            starts.append(first.dts)
    return starts


def test_a_1080p_publish_plays_as_a_four_variant_ladder_with_aligned_segments(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, media_dir: Path
) -> None:
    source = make_source(media_dir / "ladder1080.flv", seconds=20)
    stream_id, first_master = _publish_and_wait_for_ladder(
        live_stack, hls, source, ["720p", "480p", "360p"]
    )

    # The first master already held the whole ladder, nearest 2 Mbit/s first, and what it
    # advertised is what the segments made afterwards are.
    assert [p.uri.split("/")[0] for p in first_master.playlists] == [
        "480p",
        "source",
        "720p",
        "360p",
    ]
    master = _master(hls, stream_id)
    assert [p.uri for p in master.playlists] == [p.uri for p in first_master.playlists]
    expected = {"source": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
    for variant, final in zip(first_master.playlists, master.playlists, strict=True):
        name = variant.uri.split("/")[0]
        info = variant.stream_info
        url = f"{live_stack.api_url}/hls/{stream_id}/{variant.uri}"
        streams = probe(url)["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        audio = next(s for s in streams if s["codec_type"] == "audio")
        assert info.resolution == (video["width"], video["height"]) == expected[name]
        assert video["profile"] == "High"
        assert audio["profile"] == "LC"
        assert info.codecs == f"avc1.6400{video['level']:02x},mp4a.40.2"
        assert final.stream_info.codecs == info.codecs
        assert info.frame_rate == 30.0
        assert info.closed_captions == "NONE"
        assert 0 < info.average_bandwidth <= info.bandwidth <= final.stream_info.bandwidth
        errors, seconds = decode(url)
        assert errors == "", name
        assert abs(seconds - 20.0) <= 0.3, (name, seconds)

    names = [p.uri.split("/")[0] for p in master.playlists]
    starts = {name: _segment_starts(live_stack, hls, stream_id, name) for name in names}
    durations = {
        name: [s.duration for s in _media(hls, stream_id, name).segments] for name in names
    }
    assert len(starts["source"]) == 10
    for name in names:
        assert len(starts[name]) == len(starts["source"]), name
        assert all(
            abs(a - b) <= ONE_FRAME_TICKS
            for a, b in zip(starts[name], starts["source"], strict=True)
        ), (name, starts[name], starts["source"])
        assert durations[name] == durations["source"], name


def test_a_480p_publish_gets_only_the_360p_rung_besides_the_source(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, media_dir: Path
) -> None:
    source = make_source(media_dir / "ladder480.flv", seconds=6, size="854x480")
    stream_id, first_master = _publish_and_wait_for_ladder(live_stack, hls, source, ["360p"])
    assert sorted(p.uri for p in first_master.playlists) == ["360p/index.m3u8", "source/index.m3u8"]
    [rung] = [p for p in _master(hls, stream_id).playlists if p.uri.startswith("360p/")]
    assert rung.stream_info.resolution == (640, 360)
    errors, _ = decode(f"{live_stack.api_url}/hls/{stream_id}/360p/index.m3u8")
    assert errors == ""
