"""A real ffmpeg publish while the ingest's path to the object store is cut, then restored:
no segment is given up, the session is not ended, and the recording decodes whole.

The ingest reaches the (real, running) S3 server through a relay the test cuts
(`tests.network_cut`); the API and the worker reach it directly, as they would from other
hosts. Playlists stand still while the store is away (the segments wait in the ingest's
spool, not in any playlist), so nothing here polls one during the cut; the recording is
read through the checked client once the publish is over."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.settings import Settings
from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack, running_stack, stack_settings
from tests.media import decode, make_source, media_duration, publish
from tests.network_cut import NetworkCut
from tests.services import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
OUTAGE_SECONDS = 20.0


@pytest.fixture(scope="module")
def cut_stack(settings: Settings, celery_worker: None) -> Iterator[tuple[LiveStack, NetworkCut]]:
    """An ingest whose object store is behind a cut, an API and the worker without one."""
    own = stack_settings(settings, {"presentation_hold_seconds": 0.0})
    with NetworkCut(urlsplit(own.s3_endpoint).port) as path:
        ingest = own.model_copy(update={"s3_endpoint": f"http://127.0.0.1:{path.port}"})
        with running_stack(own, ingest) as stack:
            yield stack, path


def test_a_publish_through_an_object_store_outage_loses_no_segment(
    cut_stack: tuple[LiveStack, NetworkCut], media_dir: Path
) -> None:
    stack, path = cut_stack
    source = make_source(media_dir / "src480-40s.flv", seconds=40, size="854x480")
    stream = stack.create_stream("through an outage")
    publisher = publish(source, stack.rtmp_url(stream["stream_key"]))
    wait_for(lambda: len(stack.source_rows(stream["id"])) >= 3, 30, "3 segments")
    before = len(stack.source_rows(stream["id"]))
    path.cut()
    cut_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    during = len(stack.source_rows(stream["id"]))
    statuses_during = stack.session_statuses(stream["id"])
    path.restore()
    caught_up = None
    while caught_up is None and time.monotonic() - cut_at < OUTAGE_SECONDS + 60:
        # Caught up: a segment made after the store came back is recorded.
        if len(stack.source_rows(stream["id"])) >= during + OUTAGE_SECONDS / 2 + 1:
            caught_up = time.monotonic() - cut_at - OUTAGE_SECONDS
        time.sleep(0.2)
    assert publisher.wait(120) == 0, publisher.stderr.read().decode()
    wait_for(lambda: stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")

    rows = stack.source_rows(stream["id"])
    assert statuses_during == ["live"]  # the session was not ended meanwhile
    [session_id] = {session for session, _ in rows}  # one session, start to end
    assert [row.sequence for _, row in rows] == list(range(len(rows)))  # none missing
    with CheckedHls(stack.api_url) as hls:
        recording = f"/hls/sessions/{session_id}/source/index.m3u8"
        assert hls.get(recording).status_code == 200
    hls.assert_clean()
    errors, decoded = decode(f"{stack.api_url}{recording}")
    assert errors == ""
    assert abs(decoded - media_duration(source)) <= 0.5, decoded
    figures = {
        "outage_s": OUTAGE_SECONDS,
        "segments_before_cut": before,
        "segments_recorded_during_cut": during - before,
        "segments_recorded": len(rows),
        "caught_up_s_after_restore": None if caught_up is None else round(caught_up, 1),
        "recording_decoded_s": round(decoded, 2),
        "source_s": round(media_duration(source), 2),
    }
    print(json.dumps(figures))
