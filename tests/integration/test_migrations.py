"""Schema migrations and the models against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import inspect, select

from core.db import get_engine, session_scope
from core.migrate import downgrade, upgrade
from core.models import LiveSession, Rendition, Segment, Stream
from tests.services import fresh_database

TABLES = {"streams", "sessions", "renditions", "segments", "uploads", "ladder_outbox"}


def _tables(url: str) -> set[str]:
    return set(inspect(get_engine(url)).get_table_names()) - {"alembic_version"}


def test_migrations_upgrade_downgrade_and_upgrade_again_cleanly() -> None:
    with fresh_database() as url:
        upgrade(url)
        assert _tables(url) == TABLES
        downgrade(url, "base")
        assert _tables(url) == set()
        upgrade(url)
        assert _tables(url) == TABLES


def test_a_stream_with_session_rendition_and_segment_round_trips(database_url: str) -> None:
    with session_scope(database_url) as db:
        stream = Stream(name="round trip", stream_key_hash="ab" * 32)
        session = LiveSession(stream=stream, protocol="rtmp", media_info={"width": 1920})
        rendition = Rendition(session=session, name="source", codecs="avc1.64002a,mp4a.40.2")
        rendition.segments.append(
            Segment(
                sequence=0,
                duration=2.0,
                program_date_time=datetime(2026, 1, 1, tzinfo=UTC),
                object_key="hls/x/source/0.m4s",
                init_key="hls/x/source/init_0.mp4",
                size_bytes=123,
            )
        )
        db.add(stream)
    with session_scope(database_url) as db:
        loaded = db.scalars(select(Stream).where(Stream.id == stream.id)).one()
        assert loaded.status == "idle"
        assert loaded.created_at is not None
        [session] = loaded.sessions
        assert session.status == "live"
        assert session.media_info == {"width": 1920}
        [segment] = session.renditions[0].segments
        assert (segment.sequence, segment.duration, segment.status) == (0, 2.0, "ready")
        db.delete(loaded)
    with session_scope(database_url) as db:
        assert db.get(Stream, stream.id) is None
        assert (
            db.scalars(select(Segment).where(Segment.object_key == "hls/x/source/0.m4s")).all()
            == []
        )
