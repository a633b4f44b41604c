"""Hostile clients against a real `nebula-live api` process (uvicorn, PostgreSQL, Redis, S3):
each gets a precise refusal early, and the API goes on serving everyone else."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from core.settings import Settings
from core.storage import ObjectStore
from tests.conftest import ARTIFACTS
from tests.services import free_port, running_api, wait_for

UNKNOWN = "00000000-0000-0000-0000-000000000000"

BODY_LIMIT = 64 * 1024
CHUNK = 64 * 1024
HUGE = 256 * 1024 * 1024  # what the hostile client would send if nobody stopped it
# What may still be in flight when the 413 comes: socket buffers on both sides, uvicorn's
# read-ahead. Far below HUGE, so a server that read the whole body would fail the test.
IN_FLIGHT = 16 * 1024 * 1024
WS_PER_IP = 3
WS_MESSAGE_LIMIT = 4096


@dataclass
class Api:
    settings: Settings
    client: httpx.Client

    @property
    def port(self) -> int:
        return self.settings.http_port


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[Api]:
    own = settings.model_copy(
        update={
            "http_port": free_port(),
            "ws_max_connections_per_ip": WS_PER_IP,
            "ws_ping_seconds": 0.2,
        }
    )
    with running_api(own, ARTIFACTS / "logs" / "hostile-api.log") as client:
        yield Api(own, client)


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the one response on `sock`, read until the server closes."""
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def _send_chunked_until_answered(
    port: int, path: str, total: int, during: httpx.Client | None = None
) -> tuple[int, int, dict]:
    """POST a chunked body of up to `total` bytes (no token), stopping when the server answers
    or stops reading. Bytes sent, status, JSON body. `during` makes one other request per MiB."""
    piece = bytes(range(256)) * (CHUNK // 256)
    framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if during is not None and sent % (1024 * 1024) == 0:
                assert during.get("/api/v1/streams").status_code == 200
        status, body = _answer(sock)
    return sent, status, body


def test_a_huge_chunked_json_body_gets_413_early_and_others_are_served_meanwhile(
    api: Api,
) -> None:
    sent, status, body = _send_chunked_until_answered(
        api.port, "/api/v1/streams", HUGE, during=api.client
    )
    assert status == 413, body
    assert body == {
        "detail": f"the request body is larger than this server accepts ({BODY_LIMIT} bytes, "
        "NEBULA_MAX_REQUEST_BODY_BYTES)"
    }
    assert sent < IN_FLIGHT, f"{sent} bytes went in before the 413"
    created = api.client.post("/api/v1/streams", json={"name": "after the flood"})
    assert created.status_code == 201, created.text


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body_is_read(
    api: Api,
) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=20) as sock:
        # Only the headers go out: an answer proves nobody waited for the promised body.
        sock.sendall(
            b"PATCH /api/v1/streams/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        status, body = _answer(sock)
    assert status == 413
    assert f"({BODY_LIMIT} bytes, NEBULA_MAX_REQUEST_BODY_BYTES)" in body["detail"]


def test_a_body_just_under_the_limit_reaches_the_route(api: Api) -> None:
    name = "n" * (BODY_LIMIT - 100)
    response = api.client.post("/api/v1/streams", json={"name": name})
    assert response.status_code == 422, response.text  # the schema's own limit, not ours
    anonymous = httpx.post(f"{api.client.base_url}/api/v1/streams", json={"name": name}, timeout=20)
    assert anonymous.status_code == 401


def test_the_upload_route_keeps_its_own_larger_limit(api: Api) -> None:
    text = b"these are notes, not a video\n" * (4 * BODY_LIMIT // 29)
    response = api.client.post("/api/v1/uploads", files={"file": ("notes.txt", text)})
    assert response.status_code == 415, response.text  # read whole and probed: not refused


def _stream_socket(api: Api, stream_id: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{api.port}/ws/streams/{stream_id}", open_timeout=20)


def _close_of(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes `ws`: its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=20)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_websockets_over_the_per_address_cap_are_closed_with_1013_and_the_rest_go_on(
    api: Api,
) -> None:
    stream = api.client.post("/api/v1/streams", json={"name": "watched"}).json()
    with ExitStack() as sockets:
        held = [sockets.enter_context(_stream_socket(api, stream["id"])) for _ in range(WS_PER_IP)]
        for ws in held:
            assert json.loads(ws.recv(timeout=20))["type"] == "status"
        with _stream_socket(api, stream["id"]) as extra:
            assert _close_of(extra) == (
                1013,
                f"too many websockets from this address: at most {WS_PER_IP} "
                "(NEBULA_WS_MAX_CONNECTIONS_PER_IP)",
            )
        for ws in held:  # the ones within the cap keep being served
            assert json.loads(ws.recv(timeout=20)) == {"type": "ping"}
        held[0].close()

        def one_more_fits() -> bool:
            with _stream_socket(api, stream["id"]) as again:
                return json.loads(again.recv(timeout=20))["type"] == "status"

        wait_for(one_more_fits, 20, "a freed websocket slot")


def test_a_websocket_message_above_the_limit_closes_with_1009(api: Api) -> None:
    stream = api.client.post("/api/v1/streams", json={"name": "talkative"}).json()
    with _stream_socket(api, stream["id"]) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "status"
        ws.send("x" * WS_MESSAGE_LIMIT)  # at the limit: ignored, the socket stays
        assert json.loads(ws.recv(timeout=20)) == {"type": "ping"}
        ws.send("x" * (WS_MESSAGE_LIMIT + 1))
        code, _ = _close_of(ws)
    assert code == 1009


def test_an_unknown_stream_still_closes_with_4404_for_the_player(api: Api) -> None:
    with _stream_socket(api, UNKNOWN) as ws:
        assert _close_of(ws) == (4404, f"stream {UNKNOWN} not found")


BOUNDARY = "hostile-boundary"


def _upload_keys(api: Api) -> set[str]:
    return {o.key for o in ObjectStore.from_settings(api.settings).list_keys("uploads/")}


def _multipart(*parts: str) -> bytes:
    return "".join(f"--{BOUNDARY}\r\n{part}" for part in parts).encode() + (
        f"--{BOUNDARY}--\r\n".encode()
    )


@pytest.mark.parametrize(
    ("parts", "status", "detail"),
    [
        (
            [
                "Content-Disposition: form-data; name=file; filename=a.mp4\r\n"
                # Each line under python-multipart's own 4 KiB line limit, together above ours.
                + "".join(f"X-Padding-{n}: {'p' * 3000}\r\n" for n in range(3))
                + "\r\nabc\r\n"
            ],
            413,
            "a multipart part's headers are larger than 8192 bytes",
        ),
        (
            ["Content-Disposition: form-data; name=extra\r\n\r\n1\r\n"] * 17
            + ["Content-Disposition: form-data; name=file; filename=a.mp4\r\n\r\nabc\r\n"],
            400,
            "more than 16 multipart parts; send `file` and `name`",
        ),
    ],
    ids=["part-headers", "part-count"],
)
def test_multipart_headers_and_parts_are_capped_with_the_limit_in_the_refusal(
    api: Api, parts: list[str], status: int, detail: str
) -> None:
    before = _upload_keys(api)
    response = api.client.post(
        "/api/v1/uploads",
        content=_multipart(*parts),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail}
    assert _upload_keys(api) == before  # nothing stored
