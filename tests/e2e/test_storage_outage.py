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
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment
from core.settings import Settings
from media.ladder import SOURCE
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import GRACE_SECONDS, LiveStack, free_udp_port
from tests.hls_poller import CheckedHls
from tests.media import decode, make_source, media_duration, publish
from tests.network_cut import NetworkCut
from tests.services import free_port, http_status, nebula_process, settings_env, tcp_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
OUTAGE_SECONDS = 20.0


@pytest.fixture(scope="module")
def cut_stack(settings: Settings, celery_worker: None) -> Iterator[tuple[LiveStack, NetworkCut]]:
    """An ingest whose object store is behind a cut, an API and the worker without one."""
    own = settings.model_copy(
        update={
            "http_port": free_port(),
            "rtmp_port": free_port(),
            "srt_port": free_udp_port(),
            "reconnect_grace_seconds": GRACE_SECONDS,
            "presentation_hold_seconds": 0.0,
        }
    )
    logs = ARTIFACTS / "logs"
    with NetworkCut(urlsplit(own.s3_endpoint).port) as path:
        ingest = own.model_copy(update={"s3_endpoint": f"http://127.0.0.1:{path.port}"})
        with (
            nebula_process("ingest", settings_env(ingest), logs / "e2e-outage-ingest.log"),
            nebula_process("api", settings_env(own), logs / "e2e-outage-api.log"),
        ):
            docs = f"http://127.0.0.1:{own.http_port}/docs"
            wait_for(lambda: tcp_open(own.rtmp_port), 60, "ingest")
            wait_for(lambda: http_status(docs) == 200, 60, "api")
            yield LiveStack(own), path


def _source_rows(settings: Settings, stream_id: str) -> list[tuple[uuid.UUID, Segment]]:
    with session_scope(settings.database_url) as db:
        return list(
            db.execute(
                select(LiveSession.id, Segment)
                .join(Rendition, Rendition.session_id == LiveSession.id)
                .join(Segment, Segment.rendition_id == Rendition.id)
                .where(LiveSession.stream_id == uuid.UUID(stream_id), Rendition.name == SOURCE)
                .order_by(Segment.sequence)
            ).all()
        )


def _session_status(settings: Settings, stream_id: str) -> list[str]:
    with session_scope(settings.database_url) as db:
        return list(
            db.scalars(
                select(LiveSession.status).where(LiveSession.stream_id == uuid.UUID(stream_id))
            )
        )


def test_a_publish_through_an_object_store_outage_loses_no_segment(
    cut_stack: tuple[LiveStack, NetworkCut], media_dir: Path
) -> None:
    stack, path = cut_stack
    source = make_source(media_dir / "src480-40s.flv", seconds=40, size="854x480")
    stream = stack.create_stream("through an outage")
    publisher = publish(source, stack.rtmp_url(stream["stream_key"]))
    wait_for(lambda: len(_source_rows(stack.settings, stream["id"])) >= 3, 30, "3 segments")
    before = len(_source_rows(stack.settings, stream["id"]))
    path.cut()
    cut_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    during = len(_source_rows(stack.settings, stream["id"]))
    statuses_during = _session_status(stack.settings, stream["id"])
    path.restore()
    caught_up = None
    while caught_up is None and time.monotonic() - cut_at < OUTAGE_SECONDS + 60:
        # Caught up: a segment made after the store came back is recorded.
        if len(_source_rows(stack.settings, stream["id"])) >= during + OUTAGE_SECONDS / 2 + 1:
            caught_up = time.monotonic() - cut_at - OUTAGE_SECONDS
        time.sleep(0.2)
    assert publisher.wait(120) == 0, publisher.stderr.read().decode()
    wait_for(lambda: _session_status(stack.settings, stream["id"]) == ["ended"], 60, "the end")

    rows = _source_rows(stack.settings, stream["id"])
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
