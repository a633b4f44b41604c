"""Adaptive bitrate end to end: ffmpeg publishes RTMP, workers build the ladder, ffmpeg plays it."""

from __future__ import annotations

import io
from pathlib import Path

import av
import m3u8
import pytest

from tests.e2e.conftest import LiveStack
from tests.hls_poller import CheckedHls
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


def _publish_and_wait_for_ladder(
    stack: LiveStack, hls: CheckedHls, source: Path, rungs: list[str]
) -> str:
    """Publish the whole file, watching the playlists, then wait until every rendition is
    complete (EXT-X-ENDLIST)."""
    stream = stack.create_stream("ladder")
    publisher = publish(source, stack.rtmp_url(stream["stream_key"]))

    def complete() -> bool:
        names = [p.uri.split("/")[0] for p in _master(hls, stream["id"]).playlists]
        return names == ["source", *rungs] and all(
            _media(hls, stream["id"], name).is_endlist for name in names
        )

    with hls.watch(f"/hls/{stream['id']}/master.m3u8"):
        assert publisher.wait(90) == 0, publisher.stderr.read().decode()
        wait_for(complete, 60, f"every rendition of {['source', *rungs]} ended")
    return stream["id"]


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
    stream_id = _publish_and_wait_for_ladder(live_stack, hls, source, ["720p", "480p", "360p"])

    master = _master(hls, stream_id)
    expected = {"source": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}
    for variant in master.playlists:
        name = variant.uri.split("/")[0]
        info = variant.stream_info
        url = f"{live_stack.api_url}/hls/{stream_id}/{variant.uri}"
        video = next(s for s in probe(url)["streams"] if s["codec_type"] == "video")
        assert info.resolution == (video["width"], video["height"]) == expected[name]
        assert video["profile"] == "High"
        assert info.codecs.startswith("avc1.64")
        assert info.codecs.endswith(f"{video['level']:02x},mp4a.40.2")
        assert info.frame_rate == 30.0
        assert 0 < info.average_bandwidth <= info.bandwidth
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
    stream_id = _publish_and_wait_for_ladder(live_stack, hls, source, ["360p"])
    [_, rung] = _master(hls, stream_id).playlists
    assert rung.stream_info.resolution == (640, 360)
    errors, _ = decode(f"{live_stack.api_url}/hls/{stream_id}/360p/index.m3u8")
    assert errors == ""
