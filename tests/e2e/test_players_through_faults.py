"""hls.js and Shaka Player, loaded once on a page of another origin, play one live stream while
a ladder worker host is SIGKILLed mid-task, the publisher drops and comes back within the
grace window, and comes back after it (a new session). Neither may hit a fatal error or load
the stream again, and each must play on into media made after every fault; the HLS checker
watches the playlists all along. Stall figures are printed and kept in test-artifacts/, not
asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.settings import Settings
from packager.celery_app import make_celery
from tests.conftest import ARTIFACTS
from tests.faults.player_faults import FaultStage, play_through_faults, worker_host
from tests.hls_poller import CheckedHls
from tests.live_stack import GRACE_SECONDS, LADDER_360P, LiveStack
from tests.media import make_source
from tests.services import settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.player_faults, pytest.mark.timeout(600)]
# The stream URL stays one presentation past the grace window (the publisher comes back
# after it), and a rung segment a killed worker held becomes a GAP soon enough that its
# playlist never stands still for 1.5 target durations (RFC 8216bis 6.2.1). The rung waits
# at most TD (the source's next segment) + deadline + sweep - transcode time: with a TD of
# 2 s, 2 + 0.8 + 0.25 - ~0.4 = ~2.65 s, under 3.
STACK_SETTINGS = {
    "presentation_hold_seconds": 30.0,
    "rung_deadline_targets": 0.4,
    "ladder_sweep_seconds": 0.25,
}


def test_hls_js_and_shaka_play_on_through_a_worker_kill_and_two_publisher_drops(
    live_stack: LiveStack,
    hls: CheckedHls,
    celery_worker,
    settings: Settings,
    media_dir: Path,
    tmp_path: Path,
) -> None:
    with live_stack.client() as client:
        created = client.post("/api/v1/streams", json={"name": "faults", "ladder": LADDER_360P})
    assert created.status_code == 201, created.text
    doomed = live_stack.settings.model_copy(update={"workers": 1, "data_dir": tmp_path / "doomed"})
    stage = FaultStage(
        hls=hls,
        api_token=live_stack.settings.api_token,
        stream=created.json(),
        source=make_source(media_dir / "src720-10s.flv", seconds=10, size="1280x720"),
        new_worker_host=lambda: worker_host(
            settings_env(doomed), ARTIFACTS / "logs" / "doomed-worker.log"
        ),
        celery=make_celery(settings.redis_url),
        grace_seconds=GRACE_SECONDS,
    )
    run = play_through_faults(stage)

    figures = run.figures()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "players-through-faults.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert run.page_loads == 1
    for player in run.players:
        assert player.fatal_errors == (), (player.name, player.fatal_errors)
        assert player.manifest_loads == 1, (player.name, "loaded the stream again")
    for outcome in run.outcomes:
        assert all(outcome.advanced.values()), ("stopped playing", outcome.summary(), figures)
