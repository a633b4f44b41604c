"""hls.js and Shaka Player, loaded once on a page of another origin, play one live stream while
a ladder worker host is SIGKILLed mid-task, the publisher drops and comes back within the
grace window, and comes back after it (a new session). Neither may hit a fatal error or load
the stream again, and each must play on after every fault; the HLS checker watches the
playlists all along. Stall figures are printed and kept in test-artifacts/, not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from packager.celery_app import make_celery
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import GRACE_SECONDS, LADDER_360P, LiveStack
from tests.faults import FaultScenario, LoopingPublisher, worker_host
from tests.hls_poller import CheckedHls
from tests.media import make_source
from tests.players import TwoPlayers, chromium, page_server
from tests.services import settings_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

START_TIMEOUT = 60


def test_hls_js_and_shaka_play_on_through_a_worker_kill_and_two_publisher_drops(
    live_stack: LiveStack,
    hls: CheckedHls,
    celery_worker,
    settings: Settings,
    media_dir: Path,
    tmp_path: Path,
) -> None:
    source = make_source(media_dir / "src720-10s.flv", seconds=10, size="1280x720")
    with live_stack.client() as client:
        created = client.post("/api/v1/streams", json={"name": "faults", "ladder": LADDER_360P})
    assert created.status_code == 201, created.text
    stream = created.json()
    master_path = f"/hls/{stream['id']}/master.m3u8"
    doomed = live_stack.settings.model_copy(update={"workers": 1, "data_dir": tmp_path / "doomed"})

    with (
        chromium() as browser,
        page_server() as page_url,
        LoopingPublisher(source, live_stack.rtmp_url(stream["stream_key"])) as publisher,
        hls.watch(master_path),
        live_stack.client() as api,
    ):
        # A viewer opens the page as soon as the stream answers, not when the ladder is done.
        wait_for(lambda: hls.get(master_path).status_code == 200, 30, "the master playlist")
        players = TwoPlayers(browser, page_url)
        players.open(hls.url(master_path))
        started = players.wait_started(START_TIMEOUT)
        assert all(started.values()), (started, players.stats())
        scenario = FaultScenario(
            players=players,
            hls=hls,
            api=api,
            stream_id=stream["id"],
            publisher=publisher,
            new_worker_host=lambda: worker_host(
                settings_env(doomed), ARTIFACTS / "logs" / "doomed-worker.log"
            ),
            celery=make_celery(settings.redis_url),
            grace_seconds=GRACE_SECONDS,
        )
        scenario.kill_worker()
        scenario.drop_within_grace()
        scenario.drop_past_grace()
        stats = players.stats()
        page_loads = players.page_loads()
        players.close()

    figures = {
        "players": {player.name: player.summary() for player in stats},
        "faults": [outcome.summary() for outcome in scenario.outcomes],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "players-through-faults.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert page_loads == 1
    for player in stats:
        assert player.fatal_errors == (), (player.name, player.fatal_errors)
        assert player.manifest_loads == 1, (player.name, "loaded the stream again")
    for outcome in scenario.outcomes:
        assert all(outcome.advanced.values()), ("stopped playing", outcome.summary(), figures)
