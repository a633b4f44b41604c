"""A live stack for end-to-end tests: `nebula-live ingest` and `nebula-live api` as processes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment
from core.settings import Settings
from media.ladder import SOURCE
from tests.conftest import ARTIFACTS
from tests.hls_poller import CheckedHls
from tests.media import make_source
from tests.services import (
    free_port,
    http_status,
    nebula_process,
    settings_env,
    tcp_open,
    wait_for,
)

GRACE_SECONDS = 4.0
LADDER_360P = [{"name": "360p", "height": 360, "bitrate": 800_000}]


@dataclass
class LiveStack:
    settings: Settings

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.settings.rtmp_port}/live/{key}"

    def srt_url(self, key: str, *, bare: bool = False, **options: str | int) -> str:
        """What an encoder is given: the access-control stream id, or the bare key."""
        stream_id = key if bare else f"#!::r=live/{key},m=publish"
        query = "".join(f"&{name}={value}" for name, value in options.items())
        return f"srt://127.0.0.1:{self.settings.srt_port}?streamid={stream_id}{query}"

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.settings.api_token}"},
            timeout=30,
        )

    def source_rows(self, stream_id: str) -> list[tuple[uuid.UUID, Segment]]:
        """(session id, row) of every source segment of the stream, in timeline order."""
        with session_scope(self.settings.database_url) as db:
            return list(
                db.execute(
                    select(LiveSession.id, Segment)
                    .join(Rendition, Rendition.session_id == LiveSession.id)
                    .join(Segment, Segment.rendition_id == Rendition.id)
                    .where(LiveSession.stream_id == uuid.UUID(stream_id), Rendition.name == SOURCE)
                    .order_by(Segment.sequence)
                ).all()
            )

    def session_statuses(self, stream_id: str) -> list[str]:
        with session_scope(self.settings.database_url) as db:
            return list(
                db.scalars(
                    select(LiveSession.status).where(LiveSession.stream_id == uuid.UUID(stream_id))
                )
            )

    def create_stream(self, name: str = "e2e") -> dict:
        with self.client() as client:
            response = client.post("/api/v1/streams", json={"name": name})
        assert response.status_code == 201, response.text
        return response.json()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# What a test module's stack differs in, unless it sets `STACK_SETTINGS` itself: the stream
# playlists end with the session (no hold), so a finished publish reads whole from the
# stream URL's window.
DEFAULT_STACK_SETTINGS = {"presentation_hold_seconds": 0.0}


@pytest.fixture(scope="module")
def live_stack(
    settings: Settings, celery_worker: None, request: pytest.FixtureRequest
) -> Iterator[LiveStack]:
    """`nebula-live ingest` and `nebula-live api` for one test module, with the module's
    `STACK_SETTINGS`, beside the session's worker (a stream's ladder needs one). One module
    at a time: an ingest sweeps every stream in the database with its own settings, so no
    other one may run beside it (nor under the integration tests, which build rows of
    their own)."""
    changes = getattr(request.module, "STACK_SETTINGS", DEFAULT_STACK_SETTINGS)
    with running_stack(stack_settings(settings, changes)) as stack:
        yield stack


def stack_settings(settings: Settings, changes: dict[str, object]) -> Settings:
    """The session's settings on ports of a stack's own, with `changes`."""
    return settings.model_copy(
        update={
            "http_port": free_port(),
            "rtmp_port": free_port(),
            "srt_port": free_udp_port(),
            "reconnect_grace_seconds": GRACE_SECONDS,
            **changes,
        }
    )


@contextmanager
def running_stack(own: Settings, ingest: Settings | None = None) -> Iterator[LiveStack]:
    """An ingest (with `ingest`'s settings, if given) and an API, until the block ends."""
    logs = ARTIFACTS / "logs"
    with (
        nebula_process("ingest", settings_env(ingest or own), logs / "e2e-ingest.log"),
        nebula_process("api", settings_env(own), logs / "e2e-api.log"),
    ):
        wait_for(lambda: tcp_open(own.rtmp_port), 60, "ingest")
        wait_for(lambda: http_status(f"http://127.0.0.1:{own.http_port}/docs") == 200, 60, "api")
        yield LiveStack(own)


@pytest.fixture
def hls(live_stack: LiveStack) -> Iterator[CheckedHls]:
    """The test's HLS client: it checks every playlist it fetches (tests/hls_checker.py), and
    the test fails on any rule broken."""
    with CheckedHls(live_stack.api_url) as client:
        yield client
    client.assert_clean()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def source_1080p(media_dir: Path) -> Path:
    """12 s of 1080p30 H.264 high with B-frames and AAC, 2 s GOP."""
    return make_source(media_dir / "src1080.flv", seconds=12)
