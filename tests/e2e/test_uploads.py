"""Uploads end to end: files made by the ffmpeg CLI go through `nebula-live api` and the
workers, and come out as a VOD ladder that ffmpeg decodes; progress, websocket and webhooks
follow it; `nebula-live upload` does it all from the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from websockets.sync.client import connect

from core.webhooks import verify_signature
from nebula_live.processes import resident_bytes
from tests.conftest import WEBHOOK_SECRET
from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack
from tests.media import decode, make_media_file, probe
from tests.services import REPO_ROOT, WebhookReceiver, settings_env, wait_for

pytestmark = pytest.mark.e2e

SECONDS = 4
DURATION_TOLERANCE = 0.3
PROCESSING_TIMEOUT = 180
H264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "60"]


@pytest.fixture(scope="module")
def uploads(media_dir: Path) -> dict[str, Path]:
    return {
        "h264-aac": make_media_file(
            media_dir / "upload-h264-aac.mp4", *H264, "-c:a", "aac", size="1280x720"
        ),
        "vp9-opus": make_media_file(
            media_dir / "upload-vp9-opus.mkv",
            *["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "90"],
            *["-pix_fmt", "yuv420p", "-c:a", "libopus"],
        ),
        "video-only": make_media_file(media_dir / "upload-video-only.mp4", *H264, audio=False),
        "text": _text_file(media_dir / "readme.txt"),
    }


def _text_file(path: Path) -> Path:
    path.write_text("not a video\n")
    return path


def _post(stack: LiveStack, path: Path, **data: str) -> dict:
    with stack.client() as client, path.open("rb") as body:
        response = client.post("/api/v1/uploads", files={"file": (path.name, body)}, data=data)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "processing"
    assert accepted["playback_url"].endswith(f"/hls/sessions/{accepted['session_id']}/master.m3u8")
    return accepted


def _follow(stack: LiveStack, upload_id: str) -> tuple[dict, list[float]]:
    """Poll until processing ends; returns the last state and every progress seen."""
    seen: list[float] = []
    deadline = time.monotonic() + PROCESSING_TIMEOUT
    with stack.client() as client:
        while time.monotonic() < deadline:
            state = client.get(f"/api/v1/uploads/{upload_id}").json()
            seen.append(state["progress"])
            if state["status"] != "processing":
                return state, seen
            time.sleep(0.2)
    raise AssertionError(f"upload {upload_id} still processing after {PROCESSING_TIMEOUT} s")


def _assert_only_grows_to_one(progress: list[float]) -> None:
    assert progress == sorted(progress), progress
    assert progress[-1] == 1.0
    assert all(0.0 <= p <= 1.0 for p in progress)


def _assert_vod_ladder(
    stack: LiveStack,
    hls: CheckedHls,
    state: dict,
    renditions: dict[str, tuple[int, int]],
    audio: bool,
) -> None:
    """Every variant: VOD with ENDLIST, H.264 (+ AAC), the right size, decodes, lasts SECONDS."""
    playback = state["playback_url"].replace(stack.settings.public_http_url, stack.api_url)
    master = hls.playlist(playback)
    names = [variant.uri.split("/")[0] for variant in master.playlists]
    assert sorted(names) == sorted(renditions)
    for variant in master.playlists:
        name = variant.uri.split("/")[0]
        url = playback.rsplit("/", 1)[0] + "/" + variant.uri
        text = hls.get(url).text
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and "#EXT-X-ENDLIST" in text, (name, text)
        streams = probe(url)["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        assert video["codec_name"] == "h264", name
        assert (video["width"], video["height"]) == renditions[name]
        assert [s["codec_name"] for s in streams if s["codec_type"] == "audio"] == (
            ["aac"] if audio else []
        )
        errors, seconds = decode(url)
        assert errors == "", (name, errors)
        assert abs(seconds - SECONDS) <= DURATION_TOLERANCE, (name, seconds)


class _Listener(threading.Thread):
    """Websocket messages of one upload until its final `status` (or the time-box)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.messages: list[dict] = []
        self.connected = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + PROCESSING_TIMEOUT
        with connect(self.url, open_timeout=10) as ws:
            self.connected.set()
            while time.monotonic() < deadline:
                message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
                self.messages.append(message)
                if message["type"] == "status" and message["status"] != "processing":
                    return


def _ready_webhook(receiver: WebhookReceiver, upload_id: str) -> dict:
    wait_for(lambda: receiver.containing(upload_id), 30, f"webhook of upload {upload_id}")
    [delivery] = receiver.containing(upload_id)
    assert verify_signature(WEBHOOK_SECRET, delivery.headers["X-Nebula-Signature"], delivery.body)
    return json.loads(delivery.body)


def test_an_h264_aac_mp4_is_remuxed_into_a_vod_ladder_announced_by_websocket_and_webhook(
    live_stack: LiveStack,
    hls: CheckedHls,
    celery_worker,
    webhook_receiver: WebhookReceiver,
    uploads: dict[str, Path],
) -> None:
    accepted = _post(live_stack, uploads["h264-aac"], name="launch video")
    ws_url = live_stack.api_url.replace("http", "ws", 1) + f"/ws/uploads/{accepted['id']}"
    listener = _Listener(ws_url)
    listener.start()
    state, polled = _follow(live_stack, accepted["id"])
    listener.join(PROCESSING_TIMEOUT)

    assert state["status"] == "ready", state
    assert state["name"] == "launch video" and state["filename"] == "upload-h264-aac.mp4"
    _assert_only_grows_to_one(polled)
    first, *_, last = listener.messages
    assert first["type"] == "status" and first["upload_id"] == accepted["id"]
    # The worker's settings give the URL's host and port; in a deployment they are the API's.
    recording = f"/hls/sessions/{accepted['session_id']}/master.m3u8"
    assert last.pop("playback_url").endswith(recording)
    assert last == {
        "type": "status",
        "upload_id": accepted["id"],
        "status": "ready",
        "progress": 1.0,
        "error": None,
        "session_id": accepted["session_id"],
    }
    _assert_only_grows_to_one([m["progress"] for m in listener.messages])
    hook = _ready_webhook(webhook_receiver, accepted["id"])
    assert hook["type"] == "upload.ready"
    assert hook["data"]["status"] == "ready"
    assert hook["data"]["playback_url"].endswith(recording)
    _assert_vod_ladder(
        live_stack,
        hls,
        state,
        {"source": (1280, 720), "480p": (854, 480), "360p": (640, 360)},
        audio=True,
    )
    with live_stack.client() as client:
        session = client.get(f"/api/v1/sessions/{accepted['session_id']}").json()
    assert (session["stream_id"], session["protocol"], session["status"]) == (
        None,
        "upload",
        "ended",
    )
    assert session["media_info"]["video"]["codec"] == "h264"


def test_a_vp9_opus_mkv_is_transcoded_into_the_same_ladder(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, uploads: dict[str, Path]
) -> None:
    accepted = _post(live_stack, uploads["vp9-opus"])
    state, polled = _follow(live_stack, accepted["id"])
    assert state["status"] == "ready", state
    _assert_only_grows_to_one(polled)
    _assert_vod_ladder(
        live_stack, hls, state, {"source": (854, 480), "360p": (640, 360)}, audio=True
    )
    with live_stack.client() as client:
        session = client.get(f"/api/v1/sessions/{accepted['session_id']}").json()
    assert session["media_info"]["upload"]["video"]["codec"] == "vp9"
    assert session["media_info"]["upload"]["audio"]["codec"] == "opus"


def test_a_file_without_audio_becomes_a_video_only_ladder(
    live_stack: LiveStack, hls: CheckedHls, celery_worker, uploads: dict[str, Path]
) -> None:
    accepted = _post(live_stack, uploads["video-only"])
    state, polled = _follow(live_stack, accepted["id"])
    assert state["status"] == "ready", state
    _assert_only_grows_to_one(polled)
    _assert_vod_ladder(
        live_stack, hls, state, {"source": (854, 480), "360p": (640, 360)}, audio=False
    )


def _cli(stack: LiveStack, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nebula_live.cli", "upload", str(path), "--api", stack.api_url]
        + ["--token", stack.settings.api_token or ""],
        env=settings_env(stack.settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=PROCESSING_TIMEOUT,
    )


def test_the_cli_uploads_waits_for_processing_and_prints_the_playback_url(
    live_stack: LiveStack, celery_worker, uploads: dict[str, Path]
) -> None:
    result = _cli(live_stack, uploads["video-only"])
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert re.fullmatch(r"http://[^/]+/hls/sessions/[0-9a-f-]{36}/master\.m3u8", url), url
    errors, seconds = decode(url.replace(live_stack.settings.public_http_url, live_stack.api_url))
    assert errors == ""
    assert abs(seconds - SECONDS) <= DURATION_TOLERANCE

    refused = _cli(live_stack, uploads["text"])
    assert refused.returncode == 1
    assert "refused (415): not a media file" in refused.stderr
    assert refused.stdout == ""


def _api_pid(stack: LiveStack) -> int:
    return next(
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == stack.settings.http_port
    )


def test_a_200_mb_body_streams_through_the_api_in_bounded_memory(live_stack: LiveStack) -> None:
    body_bytes = 200 * 1024 * 1024
    pid = _api_pid(live_stack)
    base = resident_bytes([pid])
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, resident_bytes([pid]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with live_stack.client() as client:
        response = client.post(
            "/api/v1/uploads",
            files={"file": ("noise.bin", _NoiseFile(body_bytes))},
            timeout=300,
        )
    done.set()
    sampler.join(5)
    # The whole body reached the bucket before the probe refused it: all of it streamed.
    assert response.status_code == 415, response.text
    assert peak - base < 100 * 1024 * 1024, f"RSS grew by {(peak - base) / 2**20:.0f} MiB"


class _NoiseFile:
    """A file-like body of `size` bytes, made as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.chunk = bytes(range(256)) * 1024

    def read(self, size: int = -1) -> bytes:
        count = min(self.left, len(self.chunk) if size < 0 else min(size, len(self.chunk)))
        self.left -= count
        return self.chunk[:count]
