"""One stream URL through a publisher drop and a new session: a live presentation that never
breaks the rules a player relies on, checked on every response while it happens.

The real ffmpeg CLI publishes RTMP three times: it is killed (a network drop, no unpublish),
comes back inside the reconnect grace window, is killed again, and comes back after the
window, which makes a new session. The test's HLS client (`tests/hls_checker.py`) polls the
master and every media playlist it lists the whole time and checks every response, and
over time: MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE never go back, TARGETDURATION never
changes, a new segment (or GAP) at least every 1.5 target durations, no listed URI fails.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import m3u8
import pytest

from tests.hls_poller import CheckedHls
from tests.live_stack import GRACE_SECONDS, LiveStack
from tests.media import make_source, publish
from tests.services import wait_for

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 12.0  # longer than the grace window and the time the test takes to come back
STACK_SETTINGS = {"presentation_hold_seconds": HOLD_SECONDS}
RUNG = [{"name": "240p", "height": 240, "bitrate": 400_000}]


def _kill(publisher: subprocess.Popen[bytes]) -> None:
    publisher.send_signal(signal.SIGKILL)
    publisher.wait(10)


def _wait_listed(
    hls: CheckedHls, path: str, what: str, ok: Callable[[m3u8.M3U8], bool], timeout: float = 30
) -> None:
    wait_for(lambda: ok(hls.playlist(path)), timeout, what)


def _media_since_last_discontinuity(playlist: m3u8.M3U8) -> int:
    flags = [s.discontinuity for s in playlist.segments]
    if True not in flags:
        return 0
    last = len(flags) - 1 - flags[::-1].index(True)
    return sum(1 for s in playlist.segments[last:] if not (s.gap_tag or _is_slate(s)))


def _is_slate(segment: m3u8.Segment) -> bool:
    """What the stream URL lists while nobody publishes (`packager.slate_uris`)."""
    return segment.uri.startswith("slate/")


def test_the_stream_url_stays_one_live_presentation_through_a_drop_and_a_new_session(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, media_dir: Path
) -> None:
    source = make_source(media_dir / "continuous360.flv", seconds=40, size="640x360")
    stream = live_stack.create_stream("continuous")
    with live_stack.client() as client:
        client.patch(f"/api/v1/streams/{stream['id']}", json={"ladder": RUNG})
    url = live_stack.rtmp_url(stream["stream_key"])
    base = f"/hls/{stream['id']}"
    source_path, rung_path = f"{base}/source/index.m3u8", f"{base}/240p/index.m3u8"

    first = publish(source, url)
    wait_for(lambda: hls.get(f"{base}/master.m3u8").status_code == 200, 30, "the master")
    with hls.watch(f"{base}/master.m3u8"):
        _wait_listed(hls, source_path, "3 segments", lambda p: len(p.segments) >= 3)
        _kill(first)
        _wait_listed(hls, source_path, "a slate", lambda p: any(map(_is_slate, p.segments)))

        resumed = publish(source, url)  # inside the grace window: the same session
        _wait_listed(
            hls,
            source_path,
            "3 segments after the reconnect",
            lambda p: _media_since_last_discontinuity(p) >= 3,
        )
        _kill(resumed)
        with live_stack.client() as client:
            wait_for(
                lambda: client.get(f"/api/v1/streams/{stream['id']}").json()["status"] == "idle",
                GRACE_SECONDS + 10,
                "the session ended after the grace window",
            )

        joined = publish(source, url, "-t", "8")  # after the window: a new session joins
        assert joined.wait(60) == 0, joined.stderr.read().decode()
        wait_for(
            lambda: all(hls.playlist(p).is_endlist for p in (source_path, rung_path)),
            HOLD_SECONDS + 30,
            "EXT-X-ENDLIST in every playlist once the hold ran out",
        )

    with live_stack.client() as client:
        sessions = client.get(f"/api/v1/streams/{stream['id']}/sessions").json()["items"]
    assert len(sessions) == 2
    # The outage and the hold after the last publisher left are a slate in every rendition.
    assert all(any(map(_is_slate, hls.playlist(p).segments)) for p in (source_path, rung_path))
