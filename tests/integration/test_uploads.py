"""Refused uploads against a real `nebula-live api` process, PostgreSQL and S3 server: each
gets the right 4xx with a precise detail, and leaves no object (whole or a multipart upload
in progress) and no row behind. Media past a decode limit gets 422 naming the limit; a
playlist or concat script naming URLs gets 415 and nothing is fetched (a local HTTP server
counts the requests)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.db import session_scope
from core.models import LiveSession, Upload
from core.settings import Settings
from core.storage import ObjectStore
from tests.conftest import ARTIFACTS
from tests.media import make_media_file
from tests.services import RequestRecorder, free_port, running_api

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # more than two S3 parts: the multipart path is taken
# The API's decode limits: the 320x240, 30 fps, 3 s files here are within them.
MAX_PIXELS = 320 * 240
MAX_SECONDS = 10.0
MAX_FRAME_RATE = 30.0
CHUNK = 256 * 1024
BOUNDARY = "nebula-test-boundary"
UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[httpx.Client]:
    own = settings.model_copy(
        update={
            "http_port": free_port(),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "upload_max_pixels": MAX_PIXELS,
            "upload_max_seconds": MAX_SECONDS,
            "upload_max_frame_rate": MAX_FRAME_RATE,
        }
    )
    with running_api(own, ARTIFACTS / "logs" / "uploads-api.log") as client:
        yield client


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    mp4 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    whole = make_media_file(folder / "whole.mp4", *mp4, seconds=3, size="320x240")
    indexed = make_media_file(
        folder / "indexed.mp4", *mp4, "-movflags", "+faststart", seconds=3, size="320x240"
    )
    text = folder / "notes.txt"
    text.write_text("these are notes, not a video\n" * 100)
    cut_index = folder / "cut-index.mp4"  # moov after the data: the index is what is lost
    cut_index.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    cut_data = folder / "cut-data.mp4"  # moov first: the index promises data that is gone
    cut_data.write_bytes(indexed.read_bytes()[: indexed.stat().st_size * 6 // 10])
    audio = make_media_file(folder / "tone.m4a", "-c:a", "aac", video=False)
    small = ["-c:v", "libx264", "-preset", "ultrafast", "-an"]
    return {
        "too-large": make_media_file(folder / "large.mp4", *small, seconds=1, size="640x480"),
        "too-long": make_media_file(folder / "long.mp4", *small, seconds=12, size="64x48"),
        "too-fast": make_media_file(folder / "fast.mp4", *small, seconds=1, size="64x48", rate=60),
        "text": text,
        "cut-index": cut_index,
        "cut-data": cut_data,
        "audio": audio,
        "whole": whole,
    }


def _leftovers(settings: Settings, store: ObjectStore) -> tuple[set[str], set[str], int, int]:
    """Objects, multipart uploads in progress, upload rows, upload sessions."""
    objects = {o.key for o in store.list_keys("")}
    # The SDK keeps ListMultipartUploads private; it is the only way to see unfinished ones.
    pending = {u.object_name for u in store.client._list_multipart_uploads(store.bucket).uploads}
    with session_scope(settings.database_url) as db:
        uploads = db.scalar(select(func.count()).select_from(Upload))
        sessions = db.scalar(
            select(func.count()).select_from(LiveSession).where(LiveSession.stream_id.is_(None))
        )
    return objects, pending, uploads, sessions


@pytest.fixture
def nothing_left_behind(
    settings: Settings, store: ObjectStore, api: httpx.Client
) -> Iterator[None]:
    """The test's request must change nothing: no object, no upload in progress, no row."""
    before = _leftovers(settings, store)
    yield
    assert _leftovers(settings, store) == before
    assert api.get(f"/api/v1/uploads/{UNKNOWN}").status_code == 404  # the API keeps serving


def _post(api: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as body:
        return api.post("/api/v1/uploads", files={"file": (path.name, body)})


@pytest.mark.parametrize(
    ("kind", "status", "detail"),
    [
        ("text", 415, "not a media file: no demuxer recognises it"),
        ("cut-index", 422, "an MP4/QuickTime file that cannot be read"),
        (
            "cut-data",
            422,
            "the file is truncated or damaged: it declares 3.0 s of video but its data",
        ),
        ("audio", 422, "no video stream (found: audio (aac))"),
        (
            "too-large",
            422,
            "the video is 640x480 (307200 pixels a frame): more than this server decodes "
            "(76800 pixels, NEBULA_UPLOAD_MAX_PIXELS)",
        ),
        (
            "too-long",
            422,
            "the file declares 12.0 s: longer than this server processes "
            "(10 s, NEBULA_UPLOAD_MAX_SECONDS)",
        ),
        (
            "too-fast",
            422,
            "the video runs at 60 frames/s: more than this server decodes "
            "(30 frames/s, NEBULA_UPLOAD_MAX_FRAME_RATE)",
        ),
    ],
)
def test_a_file_that_cannot_become_a_ladder_is_refused_with_the_reason(
    api: httpx.Client, files: dict[str, Path], nothing_left_behind, kind, status, detail
) -> None:
    response = _post(api, files[kind])
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail), response.json()


def _body(size: int) -> Iterator[bytes]:
    """A multipart body made on the fly; sent chunked, so only counting can refuse it."""
    yield (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=big.bin\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    chunk = bytes(range(256)) * (CHUNK // 256)
    for _ in range(size // CHUNK):
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_a_body_that_streams_past_the_limit_gets_413_and_its_parts_are_discarded(
    api: httpx.Client, nothing_left_behind
) -> None:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    response = api.post(
        "/api/v1/uploads", content=_body(MAX_UPLOAD_BYTES + 8 * CHUNK), headers=headers
    )
    assert response.status_code == 413, response.text
    assert f"({MAX_UPLOAD_BYTES} bytes, NEBULA_MAX_UPLOAD_BYTES)" in response.json()["detail"]


def test_a_body_whose_content_length_is_over_the_limit_is_refused_before_it_is_read(
    api: httpx.Client, settings: Settings, nothing_left_behind
) -> None:
    declared = MAX_UPLOAD_BYTES * 2
    request = (
        f"POST /api/v1/uploads HTTP/1.1\r\nHost: {api.base_url.host}\r\n"
        f"Authorization: Bearer {settings.api_token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\n\r\n--{BOUNDARY}\r\n"
    )
    # Only the start of the promised body is sent: an answer proves nobody waited for it.
    with socket.create_connection((api.base_url.host, api.base_url.port), timeout=30) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert json.loads(body)["detail"].startswith(f"the body ({declared} bytes) is larger")


def test_a_body_that_is_not_a_multipart_form_with_a_file_is_refused(
    api: httpx.Client, files: dict[str, Path], nothing_left_behind
) -> None:
    raw = api.post(
        "/api/v1/uploads",
        content=files["whole"].read_bytes(),
        headers={"Content-Type": "video/mp4"},
    )
    assert raw.status_code == 415
    assert "multipart/form-data" in raw.json()["detail"]
    nameless = api.post("/api/v1/uploads", data={"name": "no file here"}, files={"x": b"1"})
    assert nameless.status_code == 422
    assert nameless.json()["detail"] == "missing multipart field `file`"


def test_uploads_need_the_token_and_unknown_ones_are_404(
    api: httpx.Client, files: dict[str, Path], nothing_left_behind
) -> None:
    with files["whole"].open("rb") as body:
        anonymous = httpx.post(f"{api.base_url}/api/v1/uploads", files={"file": body}, timeout=30)
    assert anonymous.status_code == 401
    missing = api.get(f"/api/v1/uploads/{UNKNOWN}")
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]


def test_a_body_that_ends_inside_the_file_is_refused(
    api: httpx.Client, files: dict[str, Path], nothing_left_behind
) -> None:
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=a.mp4\r\n\r\n"
    ).encode()
    response = api.post(
        "/api/v1/uploads",
        content=head + files["whole"].read_bytes(),  # no closing boundary
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "the body ended inside the `file` part"


def test_the_websocket_of_an_unknown_upload_closes_with_4404(api: httpx.Client) -> None:
    url = f"ws://{api.base_url.host}:{api.base_url.port}/ws/uploads/{UNKNOWN}"
    with connect(url, open_timeout=10) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4404
    assert closed.value.rcvd.reason == f"upload {UNKNOWN} not found"


@pytest.mark.parametrize(
    ("name", "text", "detail"),
    [
        (
            "live.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\n{url}/variant.m3u8\n",
            # The stored object has no name: FFmpeg's hls probe wants a .m3u8 one.
            "not a media file: no demuxer recognises it",
        ),
        (
            "clip.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{url}/segment0.ts\n",
            "not a media file: no demuxer recognises it",
        ),
        (
            "parts.ffconcat",
            "ffconcat version 1.0\nfile {url}/part0.ts\nfile part1.ts\n",
            "not a container we accept: an FFmpeg concat script",
        ),
    ],
)
def test_an_uploaded_playlist_or_script_is_refused_and_nothing_it_names_is_fetched(
    api: httpx.Client,
    tmp_path: Path,
    recording_server: RequestRecorder,
    nothing_left_behind,
    name: str,
    text: str,
    detail: str,
) -> None:
    url, hits = recording_server.url, recording_server.hits
    path = tmp_path / name
    path.write_text(text.format(url=url))
    response = _post(api, path)
    assert response.status_code == 415, response.text
    assert response.json()["detail"].startswith(detail), response.json()
    assert hits == []
