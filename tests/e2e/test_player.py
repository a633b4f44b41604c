"""The demo page in headless Chromium (Debian's, driven by Playwright): live play, quality
switching, the end of a stream, and a recording played to its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import LADDER_360P, LiveStack
from tests.hls_poller import CheckedHls
from tests.media import make_source, publish
from tests.players import chromium
from tests.services import wait_for

pytestmark = pytest.mark.e2e

WAIT_MS = 30_000
VIDEO = "document.getElementById('video')"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, live_stack: LiveStack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    token = json.dumps(live_stack.settings.api_token)
    context.add_init_script(f"sessionStorage.setItem('nebula.token', {token})")
    page = context.new_page()
    yield page
    context.close()


def _create_stream(stack: LiveStack, name: str, ladder: list[dict]) -> dict:
    with stack.client() as client:
        response = client.post("/api/v1/streams", json={"name": name, "ladder": ladder})
    assert response.status_code == 201, response.text
    return response.json()


def _master_has(hls: CheckedHls, stream_id: str, rendition: str) -> bool:
    response = hls.get(f"/hls/{stream_id}/master.m3u8")
    return response.status_code == 200 and f"{rendition}/index.m3u8" in response.text


def test_the_page_plays_a_live_stream_switches_quality_and_sees_it_end(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, media_dir: Path, page: Page
) -> None:
    source = make_source(media_dir / "src720-25s.flv", seconds=25, size="1280x720")
    stream = _create_stream(live_stack, "player live", LADDER_360P)
    publisher = publish(source, live_stack.rtmp_url(stream["stream_key"]))
    with hls.watch(f"/hls/{stream['id']}/master.m3u8"):
        try:
            # hls.js reads the master playlist once: open the page when the rung is in it.
            wait_for(lambda: _master_has(hls, stream["id"], "360p"), 30, "360p in master")
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"{live_stack.api_url}/player?stream={stream['id']}")

            listed_live = f'#streams li[data-id="{stream["id"]}"] .badge.live'
            page.wait_for_selector(listed_live, timeout=WAIT_MS)
            page.wait_for_function(f"{VIDEO}.currentTime > 0", timeout=WAIT_MS)
            start = page.evaluate(f"{VIDEO}.currentTime")
            page.wait_for_function(f"{VIDEO}.currentTime >= {start + 4}", timeout=WAIT_MS)

            page.wait_for_function("nebulaPlayer.hls.levels.length === 2", timeout=WAIT_MS)
            labels = page.locator("#quality button").all_inner_texts()
            assert labels[0].startswith("Auto")
            assert sorted(labels[1:]) == ["360p", "source"]
            rung = page.evaluate("nebulaPlayer.hls.levels.findIndex(l => l.name === '360p')")
            seen = len(requests)
            page.click(f'#quality button[data-level="{rung}"]')
            page.wait_for_function(f"nebulaPlayer.hls.currentLevel === {rung}", timeout=WAIT_MS)
            page.wait_for_selector(
                f'#quality button[data-level="{rung}"][aria-pressed="true"]', timeout=WAIT_MS
            )
            wait_for(lambda: any("/360p/" in url for url in requests[seen:]), 20, "a 360p request")
            page.wait_for_function(f"{VIDEO}.videoHeight === 360", timeout=WAIT_MS)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "player.png")

            assert publisher.wait(60) == 0, publisher.stderr.read().decode()
            page.wait_for_selector("#message:has-text('The stream has ended')", timeout=WAIT_MS)
            page.wait_for_selector("#status.ended", timeout=WAIT_MS)
            page.screenshot(path=ARTIFACTS / "player-ended.png")
        finally:
            publisher.kill()
            publisher.wait(10)


def test_a_recording_of_an_ended_session_plays_to_its_end(
    live_stack: LiveStack, media_dir: Path, page: Page
) -> None:
    source = make_source(media_dir / "src720-8s.flv", seconds=8, size="1280x720")
    stream = _create_stream(live_stack, "player recording", [])
    publisher = publish(source, live_stack.rtmp_url(stream["stream_key"]))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()

    def ended() -> bool:
        with live_stack.client() as client:
            sessions = client.get(f"/api/v1/streams/{stream['id']}/sessions").json()["items"]
        return [s["status"] for s in sessions] == ["ended"]

    wait_for(ended, 30, "the session ended")
    page.goto(f"{live_stack.api_url}/player?stream={stream['id']}")
    page.wait_for_selector("#message:has-text('offline')", timeout=WAIT_MS)
    page.click("#sessions li")
    page.wait_for_function(f"{VIDEO}.ended", timeout=WAIT_MS)
    played = page.evaluate(f"{VIDEO}.currentTime")
    assert played >= 7.5, played
    page.wait_for_selector("#message:has-text('End of the recording')", timeout=WAIT_MS)
