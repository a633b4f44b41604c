"""Redis restarted (down ~5 s) in the middle of a real ffmpeg publish with the ladder on,
coming back empty: the Celery queues, the events, the playlist locks are all gone. No
segment is lost, the session is not ended, the worker takes work again (the end's webhooks
go through the restarted broker), and every variant of the recording decodes whole.

The segments, their rows and the ladder's outbox (`packager.ladder_outbox`) are in
PostgreSQL and the bucket, so the playlists, rendered from rows, keep advancing through
the fault, and the checked client polls them all along. A rung segment whose task was lost
with the queue is listed as a GAP at its deadline (`packager.ladder_deadline`); the outbox
sends its task again once the broker answers, and the late result is what the recording
plays: no GAP is left in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fault_checks import publish_through_fault
from tests.fault_stack import fault_stack
from tests.live_stack import LADDER_360P
from tests.media import media_duration
from tests.services import ARTIFACTS, S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
DOWN_SECONDS = 5.0


def test_a_publish_through_a_redis_restart_loses_nothing(
    s3: S3Server, source_30s: Path, tmp_path: Path
) -> None:
    with fault_stack(s3, tmp_path, logs=ARTIFACTS / "logs" / "faults-redis") as stack:
        run = publish_through_fault(
            stack,
            source_30s,
            "redis restart",
            lambda: stack.restart_redis(DOWN_SECONDS),
            watch_playlists_during=True,
            ladder=LADDER_360P,
        )
    print(json.dumps(run.figures()))
    assert run.losses(media_duration(source_30s), ["source", "360p"]) == []
    assert run.watch.session_statuses == {"live"}
    # Nothing the API serves here needs Redis.
    assert run.watch.answers_other_than(200) == {}, (run.watch.api_statuses, run.watch.failures)
