"""The demo page in headless Chromium (Debian's, driven by Playwright): live play, quality
switching, the end of a stream, and a recording played to its end; and a page on another
site that plays the stream with hls.js (CORS)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import ARTIFACTS
from tests.hls_poller import CheckedHls
from tests.live_stack import LADDER_360P, LiveStack
from tests.media import make_source, publish
from tests.players import chromium
from tests.services import free_port, wait_for

pytestmark = pytest.mark.e2e

WAIT_MS = 30_000
VIDEO = "document.getElementById('video')"
HLS_JS = Path(__file__).resolve().parents[2] / "player_demo/node_modules/hls.js/dist/hls.min.js"


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


# An embed as a third-party site writes it: its own copy of hls.js, our stream's URL.
EMBED_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="hls.min.js"></script></head>
<body><video id="video" muted playsinline></video>
<script>
  window.fatal = [];
  function play(url) {
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) fatal.push(data.details); });
    hls.loadSource(url);
    hls.attachMedia(document.getElementById("video"));
    hls.on(Hls.Events.MANIFEST_PARSED, () => document.getElementById("video").play());
  }
</script></body></html>
"""


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """A web server on another port of the loopback: another origin than the API's."""
    if not HLS_JS.is_file():
        pytest.fail(f"{HLS_JS} is missing: run `make player`")
    shutil.copy(HLS_JS, tmp_path / "hls.min.js")
    (tmp_path / "embed.html").write_text(EMBED_PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_page_on_another_site_plays_the_stream_with_hls_js(
    live_stack: LiveStack, hls: CheckedHls, media_dir: Path, browser: Browser, other_site: str
) -> None:
    source = make_source(media_dir / "src360-20s.flv", seconds=20, size="640x360")
    stream = _create_stream(live_stack, "embedded elsewhere", [])
    publisher = publish(source, live_stack.rtmp_url(stream["stream_key"]))
    context = browser.new_context()
    try:
        wait_for(lambda: _master_has(hls, stream["id"], "source"), 30, "the master")
        page = context.new_page()
        page.goto(f"{other_site}/embed.html")
        assert page.evaluate("location.origin") != live_stack.api_url
        master = f"{live_stack.api_url}/hls/{stream['id']}/master.m3u8"
        page.evaluate("url => play(url)", master)
        # Without CORS hls.js fails at once with a fatal manifestLoadError.
        page.wait_for_function(f"{VIDEO}.currentTime > 0 || fatal.length", timeout=WAIT_MS)
        assert page.evaluate("fatal") == []
        start = page.evaluate(f"{VIDEO}.currentTime")
        page.wait_for_function(f"{VIDEO}.currentTime >= {start + 4}", timeout=WAIT_MS)
        assert page.evaluate("fatal") == []
        # The management API is not open to other sites: the browser withholds its answer.
        blocked = page.evaluate(
            "url => fetch(url).then(() => 'read', () => 'blocked')",
            f"{live_stack.api_url}/api/v1/streams",
        )
        assert blocked == "blocked"
    finally:
        context.close()
        publisher.kill()
        publisher.wait(10)
