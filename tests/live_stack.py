"""A live stack as processes: `nebula-live ingest` and `nebula-live api` on ports of their
own, and what tests read of it (the API, the URLs a publisher is given, the rows it made).

No pytest in here: the e2e fixtures (tests/e2e/conftest.py), the fault harness
(tests/fault_stack.py) and scripts in bench/ all build on it."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from core.db import session_scope
from core.models import LiveSession, Rendition, Segment
from core.settings import Settings
from media.ladder import SOURCE
from tests.services import (
    ARTIFACTS,
    free_port,
    nebula_process,
    settings_env,
    tcp_open,
    wait_for,
    wait_for_api,
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

    def create_stream(self, name: str = "e2e", ladder: list | None = None) -> dict:
        """A stream with the default ladder, or `ladder` ([]: the source only)."""
        body = {"name": name} if ladder is None else {"name": name, "ladder": ladder}
        with self.client() as client:
            response = client.post("/api/v1/streams", json=body)
        assert response.status_code == 201, response.text
        return response.json()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_settings(settings: Settings, changes: dict[str, object]) -> Settings:
    """`settings` on ports of a stack's own, with `changes`."""
    return settings.model_copy(
        update={
            "http_port": free_port(),
            "rtmp_port": free_port(),
            "srt_port": free_udp_port(),
            "reconnect_grace_seconds": GRACE_SECONDS,
            **changes,
        }
    )


def wait_for_ingest(settings: Settings) -> None:
    wait_for(lambda: tcp_open(settings.rtmp_port), 60, "ingest")


@contextmanager
def ingest_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `nebula-live ingest` process for `settings`, once it takes RTMP connections."""
    with nebula_process("ingest", settings_env(settings), log_path) as proc:
        wait_for_ingest(settings)
        yield proc


@contextmanager
def running_stack(
    own: Settings, ingest: Settings | None = None, logs: Path = ARTIFACTS / "logs"
) -> Iterator[LiveStack]:
    """An ingest (with `ingest`'s settings, if given) and an API, until the block ends; both
    start at once."""
    ingest = ingest or own
    with (
        nebula_process("ingest", settings_env(ingest), logs / "e2e-ingest.log"),
        nebula_process("api", settings_env(own), logs / "e2e-api.log"),
    ):
        wait_for_ingest(ingest)
        wait_for_api(own)
        yield LiveStack(own)
