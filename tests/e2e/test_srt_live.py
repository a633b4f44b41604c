"""SRT ingest end to end: ffmpeg and srt-live-transmit publish MPEG-TS over SRT, ffmpeg plays
the ladder we serve. Loss comes from a UDP relay in the test (no netem on this machine)."""

from __future__ import annotations

import io
import itertools
import os
import random
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import av
import m3u8
import pytest
from sqlalchemy import select as sql_select

from core.db import session_scope
from core.models import LiveSession
from media.demux.mpegts import DropReason
from tests.hls_poller import CheckedHls
from tests.live_stack import GRACE_SECONDS, LiveStack, free_udp_port
from tests.media import decode, make_ts_source, media_duration, probe, publish_ts
from tests.services import wait_for

pytestmark = pytest.mark.e2e

SECONDS = 6
ONE_FRAME_SECONDS = 1 / 30
# ffmpeg closes its SRT connection right after its last write with libsrt's live default of
# no linger: what it had not sent yet (its last audio PES, ~0.26 s here) never arrives.
CLOSE_LOSS_SECONDS = 0.3


@pytest.fixture(scope="module")
def ts_480p(media_dir: Path) -> Path:
    return make_ts_source(media_dir / "srt480.ts", seconds=SECONDS)


def _sessions(stack: LiveStack, stream_id: str) -> list[LiveSession]:
    with session_scope(stack.settings.database_url) as db:
        return list(
            db.scalars(
                sql_select(LiveSession)
                .where(LiveSession.stream_id == uuid.UUID(stream_id))
                .order_by(LiveSession.started_at)
            )
        )


def _wait_for_ladder(hls: CheckedHls, stream_id: str, names: list[str]) -> m3u8.M3U8:
    """Every rendition complete (EXT-X-ENDLIST); returns the master playlist."""

    def complete() -> bool:
        master = hls.playlist(f"/hls/{stream_id}/master.m3u8")
        have = [p.uri.split("/")[0] for p in master.playlists]
        return sorted(have) == sorted(names) and all(
            hls.playlist(f"/hls/{stream_id}/{name}/index.m3u8").is_endlist for name in have
        )

    wait_for(complete, 90, f"every rendition of {names} ended")
    return hls.playlist(f"/hls/{stream_id}/master.m3u8")


def _wait_source_ended(hls: CheckedHls, stream_id: str, what: str) -> None:
    wait_for(lambda: hls.playlist(f"/hls/{stream_id}/source/index.m3u8").is_endlist, 30, what)


def _assert_every_variant_decodes(
    stack: LiveStack, stream_id: str, master: m3u8.M3U8, seconds: float
) -> None:
    for variant in master.playlists:
        errors, decoded = decode(f"{stack.api_url}/hls/{stream_id}/{variant.uri}")
        assert errors == "", variant.uri
        # The last packets in SRT's receive buffer when the caller closes are not delivered.
        assert seconds - 0.4 <= decoded <= seconds + 0.1, (variant.uri, decoded)


def test_ffmpeg_publishing_over_srt_with_a_stream_id_plays_as_a_ladder(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, ts_480p: Path
) -> None:
    stream = live_stack.create_stream("srt first light")
    assert stream["srt_url"].endswith(f"?streamid=#!::r=live/{stream['stream_key']},m=publish")
    publisher = publish_ts(ts_480p, live_stack.srt_url(stream["stream_key"]))
    with hls.watch(f"/hls/{stream['id']}/master.m3u8"), live_stack.client() as client:
        wait_for(
            lambda: client.get(f"/api/v1/streams/{stream['id']}").json()["status"] == "live",
            15,
            "stream live",
        )
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
        master = _wait_for_ladder(hls, stream["id"], ["source", "360p"])
    [source] = [p for p in master.playlists if p.uri.startswith("source/")]
    assert source.stream_info.resolution == (854, 480)
    assert source.stream_info.codecs.startswith("avc1.64")
    _assert_every_variant_decodes(live_stack, stream["id"], master, media_duration(ts_480p))

    [session] = _sessions(live_stack, stream["id"])
    assert session.protocol == "srt"
    # The caller closed the connection: an explicit end, no grace window.
    assert session.status == "ended"
    report = session.media_info["ingest"]
    # Loopback loses nothing; only the caller's close may cut the last PES short.
    assert set(report["dropped_reasons"]) <= {DropReason.ENDED_MID_PES.value}
    assert report["warnings"] == []
    assert report["srt"]["packets_received"] > 100


class TrackSpan(NamedTuple):
    """One track of a file, in seconds on its clock: its first and last decode times, where
    its last frame ends (in a segment, where the next segment begins), and its frames."""

    first: float
    last: float
    end: float
    frames: int


def _track_spans(data: bytes, container_format: str) -> dict[str, TrackSpan]:
    """`TrackSpan` of each track ("video", "audio") of a file."""
    spans: dict[str, TrackSpan] = {}
    with av.open(io.BytesIO(data), format=container_format) as container:
        for packet in container.demux():
            if packet.dts is None or not packet.size:  # the demuxer's end-of-stream markers
                continue
            kind = packet.stream.type
            dts = float(packet.dts * packet.time_base)
            end = float((packet.dts + packet.duration) * packet.time_base)
            if kind in spans:
                spans[kind] = spans[kind]._replace(last=dts, end=end, frames=spans[kind].frames + 1)
            else:
                spans[kind] = TrackSpan(dts, dts, end, 1)
    return spans


def _segment_spans(
    stack: LiveStack, hls: CheckedHls, playlist_path: str
) -> list[dict[str, TrackSpan]]:
    """`_track_spans` of every segment of a media playlist, read from the served bytes."""
    base = playlist_path.rsplit("/", 1)[0]
    spans = []
    with stack.client() as client:
        for segment in hls.playlist(playlist_path).segments:
            init = client.get(f"{base}/{segment.init_section.uri}").content
            data = client.get(f"{base}/{segment.uri}").content
            spans.append(_track_spans(init + data, "mp4"))
    return spans


def test_an_ffmpeg_publish_over_srt_is_recorded_whole_with_its_audio_and_without_holes(
    live_stack: LiveStack, hls: CheckedHls, source_1080p: Path, tmp_path: Path
) -> None:
    """Issue 16, as a new user publishes: 12 s of 1080p30 FLV (B-frames, AAC) remuxed by
    ffmpeg to MPEG-TS over SRT. Every track is recorded from the first keyframe to within a
    frame of the end, less only what the caller's close discards; segments tile the time."""
    sent_ts = tmp_path / "sent.ts"  # the bytes `publish_ts` sends, to a file
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source_1080p), "-c", "copy", "-f", "mpegts"]
        + [str(sent_ts)],
        check=True,
        timeout=60,
    )
    sent = _track_spans(sent_ts.read_bytes(), "mpegts")
    stream = live_stack.create_stream("srt whole")
    publisher = publish_ts(source_1080p, live_stack.srt_url(stream["stream_key"], pkt_size=1316))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    wait_for(lambda: _sessions(live_stack, stream["id"])[0].status == "ended", 30, "ended")
    [session] = _sessions(live_stack, stream["id"])
    recording = f"/hls/sessions/{session.id}"

    master = hls.playlist(f"{recording}/master.m3u8")
    [source] = [p for p in master.playlists if p.uri.startswith("source/")]
    assert source.stream_info.codecs == "avc1.640028,mp4a.40.2"
    segments = _segment_spans(live_stack, hls, f"{recording}/source/index.m3u8")
    assert len(segments) == 6
    for track in ("video", "audio"):
        holes = [
            round(after[track].first - before[track].end, 3)
            for before, after in itertools.pairwise(segments)
        ]
        assert all(abs(hole) <= ONE_FRAME_SECONDS for hole in holes), (track, holes)
    # On each side's own clock from its first video frame, where the packager starts.
    origin, sent_origin = segments[0]["video"].first, sent["video"].first
    for track in ("video", "audio"):
        first, last = segments[0][track].first - origin, segments[-1][track].last - origin
        sent_first, sent_last = sent[track].first - sent_origin, sent[track].last - sent_origin
        assert abs(first - sent_first) <= ONE_FRAME_SECONDS, (track, first, sent_first)
        assert sent_last - CLOSE_LOSS_SECONDS - ONE_FRAME_SECONDS <= last, (track, last)
        assert last <= sent_last + ONE_FRAME_SECONDS, (track, last, sent_last)
        # Nothing missing in between either.
        frames = sum(spans[track].frames for spans in segments)
        frame = (sent[track].last - sent[track].first) / (sent[track].frames - 1)
        missing = sent[track].frames - frames
        assert 0 <= missing <= (CLOSE_LOSS_SECONDS + ONE_FRAME_SECONDS) / frame, (track, missing)
    # What the issue measured: the playlist's duration, against the source's.
    # VOD once its ladder work is done too: ffprobe reads a live playlist from its edge.
    wait_for(
        lambda: hls.playlist(f"{recording}/source/index.m3u8").is_endlist, 180, "the VOD recording"
    )
    duration = float(
        probe(f"{live_stack.api_url}{recording}/source/index.m3u8")["format"]["duration"]
    )
    sent_duration = max(span.end for span in sent.values()) - sent_origin
    assert sent_duration - CLOSE_LOSS_SECONDS - ONE_FRAME_SECONDS <= duration, duration
    assert duration <= sent_duration + ONE_FRAME_SECONDS, (duration, sent_duration)

    report = session.media_info["ingest"]
    assert report["srt"]["packets_dropped"] == 0
    assert set(report["dropped_reasons"]) <= {DropReason.ENDED_MID_PES.value}


def test_hevc_over_srt_with_a_bare_stream_id_plays_as_hvc1_with_h264_rungs(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, media_dir: Path
) -> None:
    source = make_ts_source(media_dir / "srt480-hevc.ts", seconds=SECONDS, video_codec="libx265")
    stream = live_stack.create_stream("srt hevc")
    publisher = publish_ts(source, live_stack.srt_url(stream["stream_key"], bare=True))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()

    master = _wait_for_ladder(hls, stream["id"], ["source", "360p"])
    source_variant, rung = sorted(master.playlists, key=lambda p: not p.uri.startswith("source/"))
    assert source_variant.stream_info.codecs.startswith("hvc1.")
    assert rung.stream_info.codecs.startswith("avc1.")
    _assert_every_variant_decodes(live_stack, stream["id"], master, media_duration(source))
    [session] = _sessions(live_stack, stream["id"])
    assert session.media_info["video"]["codec"] == "hevc"
    # x265's GOPs are open (CRA + RASL): the source's segments depend on each other, the
    # rungs' (encoded here) do not, and the streamer is told.
    assert session.open_gop
    assert not master.is_independent_segments
    assert not hls.playlist(f"/hls/{stream['id']}/source/index.m3u8").is_independent_segments
    assert hls.playlist(f"/hls/{stream['id']}/360p/index.m3u8").is_independent_segments
    with live_stack.client() as client:
        warnings = client.get(f"/api/v1/sessions/{session.id}").json()["warnings"]
    assert any("open-gop=0" in warning for warning in warnings)


def test_mp2_audio_is_ignored_and_the_session_says_why(
    live_stack: LiveStack, hls: CheckedHls, media_dir: Path
) -> None:
    """ffmpeg's MPEG-TS default audio codec is MP2: the video goes live, the audio cannot."""
    # Long enough that a loaded machine still shows the warning while it publishes (a full
    # run missed it within a 4 s one).
    source = make_ts_source(media_dir / "srt480-mp2.ts", seconds=8, audio_codec="mp2")
    stream = live_stack.create_stream("srt mp2")
    publisher = publish_ts(source, live_stack.srt_url(stream["stream_key"]))

    def shown_while_live() -> dict | None:
        sessions = _sessions(live_stack, stream["id"])
        if not sessions:
            return None
        with live_stack.client() as client:
            shown = client.get(f"/api/v1/sessions/{sessions[0].id}").json()
        return shown if shown["warnings"] and shown["status"] == "live" else None

    wait_for(shown_while_live, 8, "the warning, while the stream is live")
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    _wait_source_ended(hls, stream["id"], "the publish ended")
    [session] = _sessions(live_stack, stream["id"])
    with live_stack.client() as client:
        shown = client.get(f"/api/v1/sessions/{session.id}").json()
    [warning] = shown["warnings"]
    assert "MPEG-1 audio (MP2/MP3)" in warning or "MPEG-2 audio (MP2/MP3)" in warning
    assert "AAC" in warning
    assert "audio" not in shown["media_info"]
    master = hls.playlist(f"/hls/{stream['id']}/master.m3u8")
    [variant] = [p for p in master.playlists if p.uri.startswith("source/")]
    assert variant.stream_info.codecs.startswith("avc1.")
    assert "mp4a" not in variant.stream_info.codecs


def test_disconnect_drops_an_srt_publisher_and_ends_its_session(
    live_stack: LiveStack, ts_480p: Path
) -> None:
    stream = live_stack.create_stream("srt disconnect")
    publisher = publish_ts(ts_480p, live_stack.srt_url(stream["stream_key"]))
    try:
        wait_for(lambda: len(_sessions(live_stack, stream["id"])) == 1, 15, "session")
        with live_stack.client() as client:
            response = client.post(f"/api/v1/streams/{stream['id']}/disconnect")
        assert response.status_code in (200, 202, 204), response.text
        wait_for(
            lambda: _sessions(live_stack, stream["id"])[0].status == "ended",
            10,  # well inside the SRT file's length: the disconnect, not the end of the file
            "the session ended",
        )
    finally:
        publisher.kill()
        publisher.wait(10)


def _stream_with_refused_publish(stack: LiveStack, url: str, source: Path) -> str:
    refused = publish_ts(source, url)
    assert refused.wait(30) != 0
    return refused.stderr.read().decode()


def test_a_wrong_stream_id_is_refused_at_the_handshake_and_a_right_one_then_works(
    live_stack: LiveStack, hls: CheckedHls, ts_480p: Path
) -> None:
    stream = live_stack.create_stream("srt gatekeeper")
    key = stream["stream_key"]
    for url in (
        live_stack.srt_url("not-a-real-key"),
        live_stack.srt_url("not-a-real-key", bare=True),
        live_stack.srt_url(key).replace("m=publish", "m=request"),  # playback: not served
    ):
        stderr = _stream_with_refused_publish(live_stack, url, ts_480p)
        assert "reject" in stderr.lower() or "Input/output error" in stderr, stderr
    assert _sessions(live_stack, stream["id"]) == []

    publisher = publish_ts(ts_480p, live_stack.srt_url(key, bare=True))
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    _wait_source_ended(hls, stream["id"], "the good publish ended")
    [session] = _sessions(live_stack, stream["id"])
    assert session.protocol == "srt"


def test_srt_live_transmit_relaying_a_udp_feed_plays_as_a_ladder(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, ts_480p: Path, tmp_path: Path
) -> None:
    stream = live_stack.create_stream("srt relay")
    udp_port = free_udp_port()
    log = tmp_path / "srt-live-transmit.log"
    with open(log, "wb") as out:
        relay = subprocess.Popen(
            [
                "srt-live-transmit",
                f"udp://127.0.0.1:{udp_port}",
                live_stack.srt_url(stream["stream_key"]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: relay.poll() is None and len(_sessions(live_stack, stream["id"])) == 1,
            15,
            "srt-live-transmit connected",
        )
        feed = publish_ts(ts_480p, f"udp://127.0.0.1:{udp_port}?pkt_size=1316")
        assert feed.wait(60) == 0, feed.stderr.read().decode()
        time.sleep(1)  # what is in flight reaches the ingest
    except TimeoutError:
        raise AssertionError(log.read_text()) from None
    finally:
        relay.terminate()  # srt-live-transmit closes its SRT connection on SIGTERM
        relay.wait(10)
    master = _wait_for_ladder(hls, stream["id"], ["source", "360p"])
    _assert_every_variant_decodes(live_stack, stream["id"], master, media_duration(ts_480p))


class LossyRelay:
    """A UDP relay between an SRT caller and the ingest dropping a share of datagrams in both
    directions (seeded), and optionally everything during periodic outages
    (`outage` = (every, lasting) seconds): what an outage swallows cannot be resent in time."""

    def __init__(
        self,
        target_port: int,
        loss: float,
        seed: int,
        outage: tuple[float, float] | None = None,
    ) -> None:
        self.target = ("127.0.0.1", target_port)
        self.loss = loss
        self.outage = outage
        self.random = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(self.target)
        self.port = self.front.getsockname()[1]
        self.forwarded = 0
        self.dropped = 0
        self._caller: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _in_outage(self, started: float) -> bool:
        if self.outage is None:
            return False
        every, lasting = self.outage
        return (time.monotonic() - started) % every >= every - lasting

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            readable, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for sock in readable:
                data, sender = sock.recvfrom(65536)
                if sock is self.front:
                    self._caller = sender
                if self.random.random() < self.loss or self._in_outage(started):
                    self.dropped += 1
                    continue
                self.forwarded += 1
                if sock is self.front:
                    self.back.send(data)
                elif self._caller is not None:
                    self.front.sendto(data, self._caller)

    @contextmanager
    def running(self) -> Iterator[LossyRelay]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self.front.close()
            self.back.close()


def test_a_lossy_path_keeps_the_session_alive_and_the_recording_decodes(
    live_stack: LiveStack, hls: CheckedHls, ts_480p: Path
) -> None:
    stream = live_stack.create_stream("srt lossy")
    with LossyRelay(live_stack.settings.srt_port, loss=0.03, seed=7).running() as relay:
        url = f"srt://127.0.0.1:{relay.port}?streamid={stream['stream_key']}&latency=400000"
        publisher = publish_ts(ts_480p, url)
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    assert relay.dropped > 10
    _wait_source_ended(hls, stream["id"], "the lossy publish ended")
    [session] = _sessions(live_stack, stream["id"])
    assert session.status == "ended"
    # SRT resent what the relay dropped: lost, then recovered.
    assert session.media_info["ingest"]["srt"]["packets_lost"] > 0
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/master.m3u8")
    assert errors == ""
    assert decoded >= SECONDS - 1


def test_a_cut_link_leaves_the_session_open_for_the_grace_window(
    live_stack: LiveStack, ts_480p: Path
) -> None:
    """No shutdown arrives when the path dies: that is not the publisher ending the stream."""
    stream = live_stack.create_stream("srt cut")
    relay = LossyRelay(live_stack.settings.srt_port, loss=0.0, seed=1)
    with relay.running():
        url = f"srt://127.0.0.1:{relay.port}?streamid={stream['stream_key']}"
        publisher = publish_ts(ts_480p, url)
        try:
            wait_for(lambda: len(_sessions(live_stack, stream["id"])) == 1, 15, "session")
            time.sleep(2)
            relay.loss = 1.0  # the path goes dead, both ways
            wait_for(
                lambda: _sessions(live_stack, stream["id"])[0].disconnected_at is not None,
                15,
                "the ingest noticed the dead link",
            )
            [session] = _sessions(live_stack, stream["id"])
            assert session.status == "live"  # within the grace window
        finally:
            publisher.kill()
            publisher.wait(10)
    wait_for(
        lambda: _sessions(live_stack, stream["id"])[0].status == "ended",
        GRACE_SECONDS + 10,
        "the session ended after the grace window",
    )


def test_heavy_loss_with_low_latency_drops_counted_units_and_the_session_survives(
    live_stack: LiveStack, ts_480p: Path
) -> None:
    stream = live_stack.create_stream("srt very lossy")
    relay = LossyRelay(live_stack.settings.srt_port, loss=0.1, seed=11, outage=(1.5, 0.3))
    with relay.running():
        # 20 ms of latency (ffmpeg takes microseconds): a 300 ms outage is lost for good.
        url = f"srt://127.0.0.1:{relay.port}?streamid={stream['stream_key']}&latency=20000"
        publisher = publish_ts(ts_480p, url)
        assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    wait_for(
        lambda: _sessions(live_stack, stream["id"])[0].status == "ended",
        30,
        "the session ended (at once, or after the grace window if the close was lost)",
    )
    [session] = _sessions(live_stack, stream["id"])
    report = session.media_info["ingest"]
    assert report["srt"]["packets_dropped"] > 0
    assert report["dropped_units"] > 0
    assert sum(report["dropped_reasons"].values()) == report["dropped_units"]
    # Frames after a lost one wait for the next keyframe: what plays, plays cleanly.
    errors, decoded = decode(f"{live_stack.api_url}/hls/{stream['id']}/master.m3u8")
    assert errors == ""
    assert decoded > SECONDS / 2


def test_garbage_from_an_srt_publisher_does_not_disturb_another_live_stream(
    live_stack: LiveStack, hls: CheckedHls, ts_480p: Path
) -> None:
    good = live_stack.create_stream("srt steady")
    noisy = live_stack.create_stream("srt garbage")
    publisher = publish_ts(ts_480p, live_stack.srt_url(good["stream_key"]))
    garbage = subprocess.Popen(
        ["srt-live-transmit", "-q", "file://con", live_stack.srt_url(noisy["stream_key"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(40):
            garbage.stdin.write(os.urandom(1316) + b"\x47" * 188 + os.urandom(700))
            garbage.stdin.flush()
            time.sleep(0.05)
    finally:
        garbage.stdin.close()
        garbage.terminate()
        garbage.wait(10)
    assert publisher.wait(60) == 0, publisher.stderr.read().decode()
    _wait_source_ended(hls, good["id"], "the good publish ended")
    errors, decoded = decode(f"{live_stack.api_url}/hls/{good['id']}/master.m3u8")
    assert errors == ""
    assert abs(decoded - media_duration(ts_480p)) <= 0.4
    [noisy_session] = _sessions(live_stack, noisy["id"])
    assert noisy_session.protocol == "srt"
