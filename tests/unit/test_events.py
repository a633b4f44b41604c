"""The websocket and pub/sub messages, key for key and byte for byte, and the status values."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import CheckConstraint

from core.events import (
    PING_MESSAGE,
    Event,
    PlaylistEvent,
    ProgressEvent,
    SegmentEvent,
    StatusEvent,
    UploadStatusEvent,
    encode_event,
    event_channel,
)
from core.models import Base, SegmentStatus, StreamStatus, UploadStatus

STREAM = uuid.UUID("11111111-1111-4111-8111-111111111111")
SESSION = uuid.UUID("22222222-2222-4222-8222-222222222222")
UPLOAD = uuid.UUID("33333333-3333-4333-8333-333333333333")
S, T, U = str(STREAM), str(SESSION), str(UPLOAD)
AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
MIGRATIONS = Path(__file__).parents[2] / "core/migrations/versions"

CASES: list[tuple[Event, str, dict[str, Any]]] = [
    (
        StatusEvent(STREAM, StreamStatus.LIVE, SESSION, resumed=False),
        f"nebula:stream:{S}",
        {"type": "status", "stream_id": S, "status": "live", "session_id": T, "resumed": False},
    ),
    (
        StatusEvent(STREAM, StreamStatus.IDLE, SESSION),
        f"nebula:stream:{S}",
        {"type": "status", "stream_id": S, "status": "idle", "session_id": T},
    ),
    (
        StatusEvent(STREAM, StreamStatus.DISABLED, None),
        f"nebula:stream:{S}",
        {"type": "status", "stream_id": S, "status": "disabled", "session_id": None},
    ),
    (
        SegmentEvent(STREAM, SESSION, "source", 12, 2.0000001, "source/00000012.m4s", AT),
        f"nebula:stream:{S}",
        {
            "type": "segment",
            "stream_id": S,
            "session_id": T,
            "rendition": "source",
            "sequence": 12,
            "duration": 2.0,
            "uri": "source/00000012.m4s",
            "program_date_time": "2026-01-02T03:04:05.678000+00:00",
        },
    ),
    (
        SegmentEvent(
            STREAM, SESSION, "720p", 3, 1.98765, "720p/00000003.m4s", None, SegmentStatus.FAILED
        ),
        f"nebula:stream:{S}",
        {
            "type": "segment",
            "stream_id": S,
            "session_id": T,
            "rendition": "720p",
            "sequence": 3,
            "duration": 1.988,
            "uri": "720p/00000003.m4s",
            "program_date_time": None,
            "status": "failed",
        },
    ),
    (
        PlaylistEvent(STREAM, (f"hls/{S}/master.m3u8", f"hls/{S}/source/index.m3u8")),
        f"nebula:stream:{S}",
        {
            "type": "playlist",
            "stream_id": S,
            "uris": [f"hls/{S}/master.m3u8", f"hls/{S}/source/index.m3u8"],
        },
    ),
    (
        UploadStatusEvent(UPLOAD, UploadStatus.PROCESSING, 0.123456, None, SESSION, None),
        f"nebula:upload:{U}",
        {
            "type": "status",
            "upload_id": U,
            "status": "processing",
            "progress": 0.1235,
            "error": None,
            "session_id": T,
            "playback_url": None,
        },
    ),
    (
        UploadStatusEvent(UPLOAD, UploadStatus.FAILED, 0.5, "no video stream", None, None),
        f"nebula:upload:{U}",
        {
            "type": "status",
            "upload_id": U,
            "status": "failed",
            "progress": 0.5,
            "error": "no video stream",
            "session_id": None,
            "playback_url": None,
        },
    ),
    (
        ProgressEvent(UPLOAD, 0.987654),
        f"nebula:upload:{U}",
        {"type": "progress", "upload_id": U, "progress": 0.9877},
    ),
]


@pytest.mark.parametrize(("event", "channel", "expected"), CASES)
def test_each_event_is_the_documented_json_on_its_channel(
    event: Event, channel: str, expected: dict[str, Any]
) -> None:
    # Text equality, not only value equality: the key order and separators are the same too.
    assert encode_event(event) == json.dumps(expected)
    assert event_channel(event) == channel


def test_an_uploads_webhook_state_is_its_status_message_after_the_id() -> None:
    event = UploadStatusEvent(UPLOAD, UploadStatus.READY, 1.0, None, SESSION, "http://h/p.m3u8")
    message = event.message()
    assert list(message)[:2] == ["type", "upload_id"]
    assert {k: v for k, v in message.items() if k not in ("type", "upload_id")} == event.state()


def test_the_websocket_ping_is_a_bare_type() -> None:
    assert PING_MESSAGE == '{"type": "ping"}'


def test_the_status_enums_build_the_check_constraints_the_migrations_leave() -> None:
    """Each CHECK as the last migration to define it wrote it in its upgrade (0001 made
    them, later ones may widen one)."""
    latest: dict[str, str] = {}
    for path in sorted(MIGRATIONS.glob("[0-9]*.py")):
        text = path.read_text().partition("def downgrade")[0]
        for sql, name in re.findall(r'sa\.CheckConstraint\("([^"]+)", name="(\w+)"\)', text):
            latest[name] = sql
        for name, sql in re.findall(
            r'op\.create_check_constraint\(\s*"(\w+)",\s*"\w+",\s*"([^"]+)"\s*\)', text
        ):
            latest[name] = sql
    checks = {
        constraint.name: str(constraint.sqltext)
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }
    assert len(checks) == 4
    assert checks == {name: latest[name] for name in checks}
