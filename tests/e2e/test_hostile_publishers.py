"""Hostile RTMP clients against a real `nebula-live ingest`, with a real ffmpeg publishing
beside them: slow handshakes are cut at the publish deadline, connections past the caps are
closed on accept, and media that cannot be packaged drops only its own publisher.

Slow clients come from other loopback addresses (127.0.0.2, ...), so the per-IP cap they
hit is not the ffmpeg publisher's (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment
from core.stream_keys import new_stream_key
from media.demux.flv import FlvTag, FlvTagType, iter_flv_tags
from tests.conftest import ARTIFACTS
from tests.fixtures.rtmp.client_bytes import (
    HANDSHAKE_SIZE,
    ServerOutput,
    command,
    message_chunks,
    plain_c0c1,
)
from tests.live_stack import LiveStack
from tests.media import decode, make_source, make_ts_source, media_duration, publish, publish_ts
from tests.services import wait_for

pytestmark = pytest.mark.e2e

DEADLINE_SECONDS = 6.0
PER_IP = 3
GLOBAL = 12
STACK_SETTINGS = {
    "presentation_hold_seconds": 0.0,
    "rtmp_publish_deadline_seconds": DEADLINE_SECONDS,
    "rtmp_max_connections_per_ip": PER_IP,
    "rtmp_max_connections": GLOBAL,
    "rtmp_write_timeout_seconds": 2.0,
}
INGEST_LOG = ARTIFACTS / "logs" / "e2e-ingest.log"


def _connect_from(source_ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset); never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def _ingest_log_from(offset: int) -> list[str]:
    with open(INGEST_LOG, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


@contextlib.contextmanager
def _log_since_now() -> Iterator[list[str]]:
    """The ingest log lines written inside the block (read when it ends)."""
    start = INGEST_LOG.stat().st_size
    lines: list[str] = []
    yield lines
    lines += _ingest_log_from(start)


def _warnings(stack: LiveStack, stream_id: str) -> list[str]:
    """The warnings of the stream's only session, as the sessions API gives them."""
    with stack.client() as client:
        [session] = client.get(f"/api/v1/streams/{stream_id}/sessions").json()["items"]
        return client.get(f"/api/v1/sessions/{session['id']}").json()["warnings"]


def _segment_count(stack: LiveStack, stream_id: str) -> int:
    with session_scope(stack.settings.database_url) as db:
        return db.scalar(
            select(func.count(Segment.id))
            .join(Rendition)
            .join(LiveSession, LiveSession.id == Rendition.session_id)
            .where(LiveSession.stream_id == uuid.UUID(stream_id), Rendition.name == "source")
        )


@pytest.fixture(scope="module")
def source_360p(media_dir: Path) -> Path:
    return make_source(media_dir / "hostile-360p.flv", seconds=8, size="640x360", gop=30)


def test_an_ffmpeg_publish_goes_on_while_slow_clients_are_cut_at_the_publish_deadline(
    live_stack: LiveStack, source_360p: Path
) -> None:
    port = live_stack.settings.rtmp_port
    stream = live_stack.create_stream("beside slowloris")
    with _log_since_now() as log:
        # Each sends one handshake byte every 0.2 s: never idle (30 s), never done (1537).
        slow = [_connect_from(f"127.0.0.{2 + n // PER_IP}", port) for n in range(2 * PER_IP)]
        ports = [s.getsockname()[1] for s in slow]
        publisher = publish(source_360p, live_stack.rtmp_url(stream["stream_key"]))
        sent = dict.fromkeys(ports, 0)
        open_ = dict(zip(ports, slow, strict=True))
        give_up = time.monotonic() + DEADLINE_SECONDS + 20
        while open_ and time.monotonic() < give_up:
            for client_port, sock in list(open_.items()):
                if _closed_by_server(sock):
                    sock.close()
                    del open_[client_port]
                    continue
                with contextlib.suppress(OSError):
                    sock.send(b"\x03")
                    sent[client_port] += 1
            time.sleep(0.2)
        assert not open_, f"slow clients still open: {list(open_)}"
        assert max(sent.values()) < 1 + 2 * HANDSHAKE_SIZE  # none got past the handshake
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    cut = [line for line in log if "no publish within 6 s of connecting" in line]
    assert {p for p in ports if any(f", {p})" in line for line in cut)} == set(ports)
    wait_for(lambda: _segment_count(live_stack, stream["id"]) >= 4, 20, "segments of the publish")


def test_connections_past_the_per_ip_and_global_caps_are_closed_on_accept(
    live_stack: LiveStack,
) -> None:
    port = live_stack.settings.rtmp_port
    with _log_since_now() as log:
        held = [_connect_from("127.0.1.1", port) for _ in range(PER_IP)]
        extra = _connect_from("127.0.1.1", port)
        wait_for(lambda: _closed_by_server(extra), 5, "the connection over the per-IP cap closed")
        assert not any(_closed_by_server(sock) for sock in held)  # within the deadline still
        # Fill the global cap from other addresses; the next one is refused, whatever its IP.
        held += [_connect_from(f"127.0.2.{1 + n // PER_IP}", port) for n in range(GLOBAL - PER_IP)]
        time.sleep(0.5)  # let the server accept them all
        assert not any(_closed_by_server(sock) for sock in held)
        fresh = _connect_from("127.0.3.1", port)
        wait_for(lambda: _closed_by_server(fresh), 5, "the connection over the global cap closed")
        assert not any(_closed_by_server(sock) for sock in held)
        for sock in [*held, extra, fresh]:
            sock.close()
    assert any(f"{PER_IP} connections held from 127.0.1.1, the per-IP" in line for line in log)
    assert any(f"{GLOBAL} connections held, the limit" in line for line in log)


def _up_to_a_backwards_frame(tags: list[FlvTag], video_frames: int, back_ms: int) -> list[FlvTag]:
    """The tags up to the first `video_frames` video tags (sequence header included), then
    one more video frame stamped `back_ms` before the last one. Nothing follows it, so the
    server has read everything when it closes (no reset loses its last status)."""
    seen, out, last_video_ms = 0, [], 0
    for tag in tags:
        if tag.tag_type is FlvTagType.VIDEO:
            if seen == video_frames:
                out.append(FlvTag(tag.tag_type, last_video_ms - back_ms, tag.payload))
                return out
            seen += 1
            last_video_ms = tag.timestamp_ms
        out.append(tag)
    raise AssertionError(f"the source has fewer than {video_frames + 1} video tags")


def _publish_and_read_statuses(port: int, key: str, tags: list[FlvTag]) -> list[dict]:
    """Publish the tags over RTMP, then read the server's onStatus objects until it closes."""
    messages = {FlvTagType.AUDIO: 4, FlvTagType.VIDEO: 6, FlvTagType.SCRIPT_DATA: 5}
    output = ServerOutput()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        connect = command("connect", 1.0, {"app": "live", "tcUrl": f"rtmp://127.0.0.1:{port}/live"})
        sock.sendall(plain_c0c1() + bytes(HANDSHAKE_SIZE) + message_chunks(3, 20, connect))
        sock.sendall(message_chunks(3, 20, command("createStream", 2.0)))
        sock.sendall(message_chunks(8, 20, command("publish", 3.0, None, key, "live"), stream_id=1))
        for tag in tags:
            chunks = message_chunks(
                messages[tag.tag_type],
                int(tag.tag_type),
                tag.payload,
                timestamp=tag.timestamp_ms,
                stream_id=1,
            )
            sock.sendall(chunks)
        while data := sock.recv(65536):
            output.feed(data)
    return [values[3] for _, values in output.commands() if values[0] == "onStatus"]


def test_a_publisher_sending_a_backwards_dts_is_dropped_with_its_reason_and_others_go_on(
    live_stack: LiveStack, source_360p: Path
) -> None:
    good = live_stack.create_stream("keeps going")
    bad = live_stack.create_stream("goes backwards")
    ffmpeg = publish(source_360p, live_stack.rtmp_url(good["stream_key"]), loop=True)
    try:
        wait_for(lambda: _segment_count(live_stack, good["id"]) >= 2, 30, "the good stream live")
        tags = _up_to_a_backwards_frame(list(iter_flv_tags(source_360p.read_bytes())), 45, 1000)
        statuses = _publish_and_read_statuses(
            live_stack.settings.rtmp_port, bad["stream_key"], tags
        )
        codes = [status["code"] for status in statuses]
        assert codes == ["NetStream.Publish.Start", "NetStream.Failed"]
        assert "video dts went backwards" in statuses[1]["description"]
        assert statuses[1]["level"] == "error"

        warnings = _warnings(live_stack, bad["id"])
        assert any("the publisher was dropped: SegmenterError" in w for w in warnings), warnings
        # The other publisher never noticed: still connected, still making segments.
        before = _segment_count(live_stack, good["id"])
        wait_for(lambda: _segment_count(live_stack, good["id"]) > before, 20, "more segments")
        assert ffmpeg.poll() is None
    finally:
        ffmpeg.terminate()
        ffmpeg.wait(10)


def _srt_caller(stack: LiveStack, stream_id: str) -> subprocess.Popen[bytes]:
    """srt-live-transmit calling with `stream_id`; it waits on stdin, so only the handshake
    happens (or the rejection)."""
    url = f"srt://127.0.0.1:{stack.settings.srt_port}?streamid={stream_id}"
    return subprocess.Popen(
        ["srt-live-transmit", "file://con", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_an_srt_handshake_flood_of_junk_keys_is_refused_cheaply_beside_a_live_publish(
    live_stack: LiveStack, media_dir: Path
) -> None:
    source = make_ts_source(media_dir / "hostile-srt.ts", seconds=8)
    with live_stack.client() as client:  # the source only: this test runs no ladder worker
        good = client.post("/api/v1/streams", json={"name": "srt flood", "ladder": []}).json()
    malformed = [f"#!::r=live/junk-{n},m=publish" for n in range(8)]
    unknown = [new_stream_key() for _ in range(4)]
    start = INGEST_LOG.stat().st_size
    publisher = publish_ts(source, live_stack.srt_url(good["stream_key"]))
    wait_for(lambda: _segment_count(live_stack, good["id"]) >= 1, 30, "the SRT publish live")
    callers = [_srt_caller(live_stack, stream_id) for stream_id in malformed + unknown]
    callers += [_srt_caller(live_stack, key) for key in unknown]  # each a second time

    def rejected() -> list[str]:
        return [line for line in _ingest_log_from(start) if ": rejected (" in line]

    try:
        # srt-live-transmit stays up after a rejection: the ingest log tells when all came.
        wait_for(lambda: len(rejected()) >= len(callers), 30, "every caller rejected")
    finally:
        for caller in callers:
            caller.kill()
            caller.wait(10)
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    lines = rejected()
    assert len(lines) == len(callers)
    assert sum("malformed stream key (6 characters" in line for line in lines) == len(malformed)
    assert not any("junk-" in line for line in lines)  # the key is never logged
    looked_up = [line for line in lines if line.endswith("(1403): unknown stream key")]
    cached = [line for line in lines if "refused again within 60 s without a lookup" in line]
    # Each unknown key reaches the database once; its repeat is refused from the cache.
    assert (len(looked_up), len(cached)) == (len(unknown), len(unknown)), lines
    # The live publish went on through it: its whole recording is there.
    with live_stack.client() as client:
        wait_for(
            lambda: "#EXT-X-ENDLIST" in client.get(f"/hls/{good['id']}/source/index.m3u8").text,
            30,
            "the SRT publish ended",
        )
    errors, decoded = decode(f"{live_stack.api_url}/hls/{good['id']}/master.m3u8")
    assert errors == ""
    assert abs(decoded - media_duration(source)) <= 0.4


def _without_keyframes_past(tags: list[FlvTag], seconds: float) -> list[FlvTag]:
    """The tags with every video frame after the first keyframe marked inter (FLV frame type
    2), up to and including the first tag stamped more than `seconds` after that keyframe."""
    out: list[FlvTag] = []
    first_ms = None
    for tag in tags:
        payload = tag.payload
        if tag.tag_type is FlvTagType.VIDEO and payload[1] == 1:  # an AVC NALU packet
            if first_ms is None:
                first_ms = tag.timestamp_ms
            else:
                payload = bytes([0x27]) + payload[1:]
        out.append(FlvTag(tag.tag_type, tag.timestamp_ms, payload))
        if first_ms is not None and tag.timestamp_ms - first_ms > seconds * 1000:
            return out
    raise AssertionError(f"the source is shorter than {seconds} s")


def test_a_publisher_without_keyframes_is_dropped_at_ten_targets_and_told_why(
    live_stack: LiveStack, media_dir: Path
) -> None:
    source = make_source(media_dir / "hostile-24s.flv", seconds=24, size="320x240", gop=30)
    stream = live_stack.create_stream("no keyframes")
    limit = live_stack.settings.segment_max_open_targets * live_stack.settings.segment_seconds
    tags = _without_keyframes_past(list(iter_flv_tags(source.read_bytes())), limit)
    statuses = _publish_and_read_statuses(live_stack.settings.rtmp_port, stream["stream_key"], tags)
    assert [status["code"] for status in statuses] == [
        "NetStream.Publish.Start",
        "NetStream.Failed",
    ]
    description = statuses[1]["description"]
    assert "SegmentOverflowError: no keyframe to cut at" in description
    assert "over the limit of 20.0 s" in description
    warnings = _warnings(live_stack, stream["id"])
    assert any("no keyframe to cut at" in warning for warning in warnings), warnings
    assert _segment_count(live_stack, stream["id"]) == 0  # the unbounded segment is not kept


def test_an_srt_publisher_without_keyframes_is_dropped_and_its_session_says_why(
    live_stack: LiveStack, media_dir: Path
) -> None:
    source = media_dir / "hostile-one-keyframe.ts"
    if not source.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
             "-t", "24", "-c:v", "libx264", "-preset", "veryfast", "-g", "1000",
             "-keyint_min", "1000", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
             "-f", "mpegts", str(source)],
            check=True,
            timeout=120,
        )  # fmt: skip
    with live_stack.client() as client:
        stream = client.post("/api/v1/streams", json={"name": "srt gop", "ladder": []}).json()
    publisher = publish_ts(source, live_stack.srt_url(stream["stream_key"]))
    try:
        publisher.wait(60)  # the ingest closes it about 20 s in, before the source ends
    finally:
        publisher.kill()
    wait_for(
        lambda: any("no keyframe" in w for w in _warnings(live_stack, stream["id"])),
        20,
        "the drop recorded on the session",
    )
    [warning] = [w for w in _warnings(live_stack, stream["id"]) if "no keyframe" in w]
    assert warning.startswith("the publisher was dropped: no keyframe to cut at")
    assert "over the limit of 20.0 s" in warning
    assert _segment_count(live_stack, stream["id"]) == 0


def test_a_client_that_reads_nothing_we_send_is_dropped_at_the_write_timeout(
    live_stack: LiveStack,
) -> None:
    """Ping requests make the server answer; a client that never reads fills the socket
    buffers until the server's writes block: that client is dropped, after the write
    timeout (2 s here), long before the publish deadline (6 s) or the idle timeout."""
    ping = message_chunks(2, 4, b"\x00\x06\x00\x00\x00\x01") * 10_000
    with _log_since_now() as log:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.4.1", 0))
        sock.connect(("127.0.0.1", live_stack.settings.rtmp_port))
        sock.settimeout(20)
        connect = command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
        sock.sendall(plain_c0c1() + bytes(HANDSHAKE_SIZE) + message_chunks(3, 20, connect))
        sent = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(ping)
                sent += len(ping)
        wait_for(lambda: _closed_after_draining(sock), 20, "the connection closed")
        sock.close()
    dropped = [line for line in log if "took nothing we sent for 2 s, dropped" in line]
    assert [line for line in dropped if "127.0.4.1" in line], log[-20:]
    assert not any("127.0.4.1" in line and "no publish within" in line for line in log)


def _closed_after_draining(sock: socket.socket) -> bool:
    """Read whatever the server had sent; True once it closed the connection."""
    sock.setblocking(False)
    try:
        while data := sock.recv(1 << 20):
            del data
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    return True
