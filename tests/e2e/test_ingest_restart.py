"""An ingest SIGKILLed mid-publish: the publisher, back on the ingest started again in its
place, continues the same session after one discontinuity, and the recording decodes.

The stream counts as published until the dead ingest's heartbeat is a stale period old
(`ingest.sessions`); the publisher is refused until then, with how long to wait, and tries
again every two seconds, as OBS's automatic reconnect does. Nothing polls a playlist while
the ingest is down: they stand still for that stale period, which is the fault."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import LiveStack, free_udp_port
from tests.media import decode, make_source, publish, publish_until_taken
from tests.services import free_port, nebula_process, settings_env, tcp_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
# The grace runs from when the dead ingest's heartbeat is a stale period old; the publisher
# retries every ~4 s, so a grace wider than the e2e stacks' 4 s is sure to see one land.
STACK_SETTINGS = {"presentation_hold_seconds": 0.0, "reconnect_grace_seconds": 30.0}


def test_a_publisher_back_on_a_restarted_ingest_continues_its_session(
    live_stack: LiveStack, media_dir: Path
) -> None:
    source = make_source(media_dir / "src360-20s.flv", seconds=20, size="640x360")
    own = live_stack.settings.model_copy(
        update={"rtmp_port": free_port(), "srt_port": free_udp_port()}
    )
    stream = live_stack.create_stream("ingest restart")
    url = f"rtmp://127.0.0.1:{own.rtmp_port}/live/{stream['stream_key']}"
    log = ARTIFACTS / "logs" / "e2e-restarted-ingest.log"
    with nebula_process("ingest", settings_env(own), log) as doomed:
        wait_for(lambda: tcp_open(own.rtmp_port), 60, "the ingest")
        first = publish(source, url)
        wait_for(lambda: len(live_stack.source_rows(stream["id"])) >= 3, 30, "3 segments")
        doomed.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        doomed.wait(10)
        first.wait(30)  # its connection broke
    with nebula_process("ingest", settings_env(own), log):
        wait_for(lambda: tcp_open(own.rtmp_port), 60, "the ingest, started again")
        again = publish_until_taken(source, url, time.monotonic() + 60)
        print(f"publish taken again {time.monotonic() - killed_at:.1f} s after the SIGKILL")
        assert again.wait(60) == 0, again.stderr.read().decode()
        wait_for(lambda: live_stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")

    rows = live_stack.source_rows(stream["id"])
    [session_id] = {session for session, _ in rows}  # one session across the restart
    media = [row for _, row in rows if row.status != "gap"]
    assert [row.sequence for _, row in rows] == list(range(len(rows)))
    assert sum(row.discontinuity for _, row in rows) >= 1
    assert len({row.init_key for row in media}) == 2  # one init per connection
    errors, decoded = decode(f"{live_stack.api_url}/hls/sessions/{session_id}/source/index.m3u8")
    assert errors == ""
    assert decoded >= 20 + 4  # the whole second publish, and what the first stored
