"""Schema migrations and the models against a real PostgreSQL."""

from __future__ import annotations

import uuid
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


def test_the_presentation_migration_makes_each_streams_latest_session_its_presentation() -> None:
    with fresh_database() as url:
        upgrade(url, "0003")
        with get_engine(url).begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO streams (id, name, stream_key_hash, status) VALUES"
                " ('00000000-0000-0000-0000-00000000000a', 'ended', 'a', 'idle'),"
                " ('00000000-0000-0000-0000-00000000000b', 'live', 'b', 'live')"
            )
            conn.exec_driver_sql(
                "INSERT INTO sessions (id, stream_id, status, protocol, started_at, ended_at,"
                " media_info, bytes_ingested) VALUES"
                " ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a',"
                "  'ended', 'rtmp', now() - interval '2 hours', now() - interval '1 hour',"
                "  '{}', 0),"
                " ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-00000000000a',"
                "  'ended', 'rtmp', now() - interval '50 minutes', now() - interval '40 minutes',"
                "  '{}', 0),"
                " ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-00000000000b',"
                "  'live', 'rtmp', now(), NULL, '{}', 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO renditions (id, session_id, name, codecs, bandwidth,"
                " average_bandwidth) VALUES"
                " (1, '00000000-0000-0000-0000-0000000000a2', 'source', 'avc1', 0, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO segments (rendition_id, sequence, duration, discontinuity,"
                " object_key, init_key, size_bytes, status) VALUES"
                " (1, 7, 2.0, false, 'k7', 'i', 1, 'ready'),"
                " (1, 8, 2.0, false, 'k8', 'i', 1, 'ready')"
            )
        upgrade(url)
        with session_scope(url) as db:
            ended = db.get(Stream, uuid.UUID("00000000-0000-0000-0000-00000000000a"))
            live = db.get(Stream, uuid.UUID("00000000-0000-0000-0000-00000000000b"))
            assert ended.presentation_sequence == 7 and ended.presentation_ended_at is not None
            assert live.presentation_sequence == 0 and live.presentation_ended_at is None
            assert ended.target_duration is None
            by_id = {
                s.id.hex[-2:]: s.presentation_sequence for s in db.scalars(select(LiveSession))
            }
            assert by_id == {"a1": None, "a2": 7, "b1": 0}
        downgrade(url, "0003")
