"""One stream URL through a publisher drop and a new session: a live presentation that never
breaks the rules a player relies on, checked on every response while it happens.

The real ffmpeg CLI publishes RTMP three times: it is killed (a network drop, no unpublish),
comes back inside the reconnect grace window, is killed again, and comes back after the
window, which makes a new session. A poller fetches the master and every media playlist it
ever listed twice a second the whole time and runs `LivePlaylistChecks` on each response.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import m3u8
import pytest

from tests.e2e.conftest import GRACE_SECONDS, LiveStack
from tests.live_playlist_checks import LivePlaylistChecks
from tests.media import make_source, publish
from tests.services import wait_for

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 12.0  # longer than the grace window and the time the test takes to come back
STACK_SETTINGS = {"presentation_hold_seconds": HOLD_SECONDS}
POLL_SECONDS = 0.5
RUNG = [{"name": "240p", "height": 240, "bitrate": 400_000}]


@dataclass
class Poller:
    """Fetches the stream's playlists until stopped, feeding every response to the checks."""

    stack: LiveStack
    stream_id: str
    key: str
    checks: LivePlaylistChecks
    playlists: set[str] = field(default_factory=set)
    latest: dict[str, m3u8.M3U8] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        base = f"{self.stack.api_url}/hls/{self.stream_id}/"
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                master = client.get(base + "master.m3u8")
                if master.status_code == 200:
                    self.playlists |= {base + p.uri for p in m3u8.loads(master.text).playlists}
                for url in sorted(self.playlists):
                    response = client.get(url)
                    if response.status_code != 200:
                        self.checks.missing(url, response.status_code)
                        continue
                    self.checks.check(url, response.text, time.monotonic())
                    self.latest[url.removeprefix(base)] = m3u8.loads(response.text)
                self.stop.wait(POLL_SECONDS)

    def listed(self, name: str) -> m3u8.M3U8 | None:
        return self.latest.get(f"{name}/index.m3u8")


@pytest.fixture
def poller(live_stack: LiveStack) -> Iterator[Poller]:
    stream = live_stack.create_stream("continuous")
    with live_stack.client() as client:
        client.patch(f"/api/v1/streams/{stream['id']}", json={"ladder": RUNG})
    answers = httpx.Client(timeout=10)
    checks = LivePlaylistChecks(
        lambda url: answers.get(url).status_code, slack_seconds=POLL_SECONDS + 0.25
    )
    poller = Poller(live_stack, stream["id"], stream["stream_key"], checks)
    thread = threading.Thread(target=poller.run, name="playlist-poller", daemon=True)
    thread.start()
    yield poller
    poller.stop.set()
    thread.join(30)
    answers.close()


def _kill(publisher: subprocess.Popen[bytes]) -> None:
    publisher.send_signal(signal.SIGKILL)
    publisher.wait(10)


def _wait_listed(
    poller: Poller, what: str, ok: Callable[[m3u8.M3U8], bool], timeout: float = 30
) -> None:
    def listed() -> bool:
        playlist = poller.listed("source")
        return playlist is not None and ok(playlist)

    wait_for(listed, timeout, what)


def _media_since_last_discontinuity(playlist: m3u8.M3U8) -> int:
    flags = [s.discontinuity for s in playlist.segments]
    if True not in flags:
        return 0
    last = len(flags) - 1 - flags[::-1].index(True)
    return sum(1 for s in playlist.segments[last:] if not s.gap_tag)


def test_the_stream_url_stays_one_live_presentation_through_a_drop_and_a_new_session(
    live_stack: LiveStack, celery_worker, media_dir: Path, poller: Poller
) -> None:
    source = make_source(media_dir / "continuous360.flv", seconds=40, size="640x360")
    url = live_stack.rtmp_url(poller.key)

    first = publish(source, url)
    _wait_listed(poller, "3 segments", lambda p: len(p.segments) >= 3)
    _kill(first)
    _wait_listed(poller, "a gap", lambda p: any(s.gap_tag for s in p.segments))

    resumed = publish(source, url)  # inside the grace window: the same session
    _wait_listed(
        poller, "3 segments after the reconnect", lambda p: _media_since_last_discontinuity(p) >= 3
    )
    _kill(resumed)
    with live_stack.client() as client:
        wait_for(
            lambda: client.get(f"/api/v1/streams/{poller.stream_id}").json()["status"] == "idle",
            GRACE_SECONDS + 10,
            "the session ended after the grace window",
        )

    joined = publish(source, url, "-t", "8")  # after the window: a new session joins
    assert joined.wait(60) == 0, joined.stderr.read().decode()
    wait_for(
        lambda: len(poller.latest) >= 2 and all(p.is_endlist for p in poller.latest.values()),
        HOLD_SECONDS + 30,
        "EXT-X-ENDLIST in every playlist once the hold ran out",
    )
    poller.stop.set()

    checks = poller.checks
    assert checks.violations == [], "\n".join(checks.violations)
    assert set(poller.latest) == {"source/index.m3u8", "240p/index.m3u8"}
    assert checks.responses > 50
    with live_stack.client() as client:
        sessions = client.get(f"/api/v1/streams/{poller.stream_id}/sessions").json()["items"]
    assert len(sessions) == 2
    assert {url.rsplit("/", 2)[-2] for url, _ in checks.gaps_seen} == {"source", "240p"}
    print(  # the figures for the closing note (pytest -s)
        "longest wait for a new segment:",
        {u.rsplit("/", 2)[-2]: round(w, 2) for u, w in checks.longest_wait.items()},
        f"gaps seen: {len(checks.gaps_seen)}, responses checked: {checks.responses}",
    )
