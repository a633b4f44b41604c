"""Spooled segments are never lost to a crash or a reconnect while the object store is away.

An ingest SIGKILLed while its path to S3 is cut (`tests.network_cut`), with segments in its
spool, started again on the same data dir: once the store is back every segment is
recorded in order, before those of the publisher that came back, and the recording
decodes whole. And a real ffmpeg publisher dropped and back during a cut is taken at once,
not refused until its old segments are stored; one session holds them all, in order.

The ingests reach S3 through the relay the test cuts; the API and the worker directly.
Nothing polls a playlist during a cut (they stand still then: the segments wait in the
spool); the recording is read once the publish is over."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.settings import Settings
from tests.conftest import ARTIFACTS
from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack, free_udp_port, running_stack, stack_settings
from tests.media import decode, make_source, publish, publish_until_taken
from tests.network_cut import NetworkCut
from tests.services import free_port, nebula_process, settings_env, tcp_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
# The restarted ingest adopts the dead one's session once its heartbeat is a stale period
# old; the grace is wide enough that no sweep ends the session before that.
STACK_SETTINGS = {"presentation_hold_seconds": 0.0, "reconnect_grace_seconds": 30.0}


@pytest.fixture(scope="module")
def cut_stack(settings: Settings, celery_worker: None) -> Iterator[tuple[LiveStack, NetworkCut]]:
    """An ingest whose object store is behind a cut, an API and the worker without one."""
    own = stack_settings(settings, STACK_SETTINGS)
    with NetworkCut(urlsplit(own.s3_endpoint).port) as path:
        ingest = own.model_copy(update={"s3_endpoint": f"http://127.0.0.1:{path.port}"})
        with running_stack(own, ingest) as stack:
            yield stack, path


def _spooled(settings: Settings) -> list[Path]:
    # The ingest's slot is 0: nothing else runs on its data dir.
    slot = settings.data_dir / "spool" / "0"
    return [p for p in slot.glob("*/*.m4s") if p.parent.name != "unplaced"]


def _media_rows(stack: LiveStack, stream_id: str) -> int:
    """Segments recorded with media (the outage sweep's gaps have none)."""
    return sum(row.status != "gap" for _, row in stack.source_rows(stream_id))


def _ended_recording(stack: LiveStack, session_id: object) -> str:
    """The session's recording URL, once it is VOD: EXT-X-ENDLIST waits for its ladder, and
    before that ffmpeg would read it as live, from its last segments."""
    path = f"/hls/sessions/{session_id}/source/index.m3u8"
    with CheckedHls(stack.api_url) as hls:
        wait_for(lambda: "#EXT-X-ENDLIST" in hls.get(path).text, 120, "the recording's end")
    hls.assert_clean()
    return f"{stack.api_url}{path}"


def test_an_ingest_killed_with_segments_spooled_stores_them_in_order_once_started_again(
    cut_stack: tuple[LiveStack, NetworkCut], media_dir: Path, tmp_path: Path
) -> None:
    stack, path = cut_stack
    source = make_source(media_dir / "src360-20s.flv", seconds=20, size="640x360")
    own = stack.settings.model_copy(
        update={
            "rtmp_port": free_port(),
            "srt_port": free_udp_port(),
            "s3_endpoint": f"http://127.0.0.1:{path.port}",
            "data_dir": tmp_path / "ingest-data",
        }
    )
    stream = stack.create_stream("spool replay")
    url = f"rtmp://127.0.0.1:{own.rtmp_port}/live/{stream['stream_key']}"
    log = ARTIFACTS / "logs" / "e2e-spool-replay-ingest.log"
    with nebula_process("ingest", settings_env(own), log) as doomed:
        wait_for(lambda: tcp_open(own.rtmp_port), 60, "the ingest")
        first = publish(source, url)
        wait_for(lambda: len(stack.source_rows(stream["id"])) >= 2, 30, "2 segments")
        path.cut()
        wait_for(lambda: len(_spooled(own)) >= 3, 30, "3 segments spooled")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        first.wait(30)  # its connection broke
    stored, left = _media_rows(stack, stream["id"]), len(_spooled(own))
    with nebula_process("ingest", settings_env(own), log):
        wait_for(lambda: tcp_open(own.rtmp_port), 60, "the ingest, started again")
        again = publish_until_taken(source, url, time.monotonic() + 60)
        time.sleep(4)  # the resumed publish spools behind the leftovers
        recorded_during_cut = _media_rows(stack, stream["id"])
        path.restore()
        assert again.wait(90) == 0, again.stderr.read().decode()
        wait_for(lambda: stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")
        assert _spooled(own) == []

    rows = stack.source_rows(stream["id"])
    [session_id] = {session for session, _ in rows}  # one session across the crash
    assert [row.sequence for _, row in rows] == list(range(len(rows)))
    media = [row for _, row in rows if row.status != "gap"]
    first_init, second_init = dict.fromkeys(row.init_key for row in media)  # one per connection
    # Every segment the dead ingest closed is recorded, all before the resumed publish's.
    assert [row.init_key for row in media] == [first_init] * (stored + left) + [second_init] * (
        len(media) - stored - left
    )
    assert recorded_during_cut == stored  # nothing was recorded without the store
    gaps = len(rows) - len(media)
    errors, decoded = decode(_ended_recording(stack, session_id))
    assert errors == ""
    assert decoded >= sum(row.duration for row in media) - 0.5
    assert decoded >= 20 + (stored + left) * 1.5  # the whole second publish, and the first's
    print(f"stored before the kill {stored}, spooled {left}, recorded {len(media)}, gaps {gaps}")


def test_a_publisher_dropped_during_a_storage_cut_is_taken_back_at_once(
    cut_stack: tuple[LiveStack, NetworkCut], media_dir: Path
) -> None:
    stack, path = cut_stack
    source = make_source(media_dir / "src360-20s.flv", seconds=20, size="640x360")
    stream = stack.create_stream("reconnect while spooling")
    first = publish(source, stack.rtmp_url(stream["stream_key"]))
    wait_for(lambda: len(stack.source_rows(stream["id"])) >= 2, 30, "2 segments")
    path.cut()
    time.sleep(6)  # segments wait in the spool
    first.kill()  # the connection drops: no unpublish
    first.wait(10)
    again = publish(source, stack.rtmp_url(stream["stream_key"]))
    time.sleep(4)  # a refused ffmpeg exits within a second
    assert again.poll() is None, again.stderr.read().decode()
    assert stack.session_statuses(stream["id"]) == ["live"]
    path.restore()
    assert again.wait(90) == 0, again.stderr.read().decode()
    wait_for(lambda: stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")

    rows = stack.source_rows(stream["id"])
    [session_id] = {session for session, _ in rows}
    assert [row.sequence for _, row in rows] == list(range(len(rows)))
    assert [row.status for _, row in rows if row.status == "gap"] == []  # held all along
    inits = [row.init_key for _, row in rows]
    first_init, second_init = dict.fromkeys(inits)
    assert inits == sorted(inits, key=[first_init, second_init].index)  # old ones first
    assert sum(row.discontinuity for _, row in rows) == 1  # where the new connection begins
    errors, decoded = decode(_ended_recording(stack, session_id))
    assert errors == ""
    assert decoded >= sum(row.duration for _, row in rows) - 0.5
    assert decoded >= 20 + 6
