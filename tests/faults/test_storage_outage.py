"""A real ffmpeg publish with the ladder on while the ingest's path to the object store is
cut for 15 s, then restored: no segment is given up, the session is not ended, and every
variant of the recording decodes whole.

The ingest reaches the (real, running) S3 server through a relay the harness cuts
(`tests.network_cut`); the API and the worker reach it directly, as they would from other
hosts. Playlists stand still while the store is away (the segments wait in the ingest's
spool, not in any playlist), so nothing polls them during the cut; the checked client
watches them before and after it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fault_checks import publish_through_fault
from tests.fault_stack import FaultStack, fault_stack
from tests.live_stack import LADDER_360P
from tests.media import media_duration
from tests.services import ARTIFACTS, S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
OUTAGE_SECONDS = 15.0


def _outage(stack: FaultStack) -> None:
    stack.storage_cut.cut()
    time.sleep(OUTAGE_SECONDS)
    stack.storage_cut.restore()


def test_a_publish_through_an_object_store_outage_loses_no_segment(
    s3: S3Server, source_30s: Path, tmp_path: Path
) -> None:
    with fault_stack(s3, tmp_path, logs=ARTIFACTS / "logs" / "faults-storage") as stack:
        run = publish_through_fault(
            stack,
            source_30s,
            "object store outage",
            lambda: _outage(stack),
            watch_playlists_during=False,
            ladder=LADDER_360P,
        )
    print(json.dumps(run.figures()))
    assert run.losses(media_duration(source_30s), ["source", "360p"]) == []
    assert run.watch.session_statuses == {"live"}
    # The API reaches the store itself, and the playlists are rendered from rows.
    assert run.watch.answers_other_than(200) == {}, (run.watch.api_statuses, run.watch.failures)
