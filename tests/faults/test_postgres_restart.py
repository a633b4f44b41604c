"""PostgreSQL restarted (fast shutdown, ~10 s down) in the middle of a real ffmpeg publish
with the ladder on: no segment is lost, the session is not ended, the API says 503 (not
500) while the database is away, and every variant of the recording decodes whole.

While the database is away the ingest's segments wait in its spool (`ingest.spool`) and
the playlists stand still; nothing polls them during the fault (that standstill is the
fault, not a broken rule), and the checked client watches them before and after it."""

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
DOWN_SECONDS = 10.0


def test_a_publish_through_a_postgres_restart_loses_nothing(
    s3: S3Server, source_30s: Path, tmp_path: Path
) -> None:
    with fault_stack(s3, tmp_path, logs=ARTIFACTS / "logs" / "faults-postgres") as stack:
        run = publish_through_fault(
            stack,
            source_30s,
            "postgres restart",
            lambda: stack.restart_postgres(DOWN_SECONDS),
            watch_playlists_during=False,
            ladder=LADDER_360P,
        )
    print(json.dumps(run.figures()))
    assert run.losses(media_duration(source_30s), ["source", "360p"]) == []
    assert run.watch.session_statuses == {"live", None}  # None: the database was away
    # While it is away the API says so, 503, never a 500: how a client tells it to wait.
    assert run.watch.answers_other_than(200, 503) == {}, (
        run.watch.api_statuses,
        run.watch.failures,
    )
    assert all(503 in answers for answers in run.watch.api_statuses.values())
