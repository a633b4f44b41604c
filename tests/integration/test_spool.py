"""A live publish through an object-store outage: its segments wait in the ingest's spool on
disk and are stored, in order and whole, once the store is back; none is given up."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import select

from api.app import create_app
from core.db import session_scope
from core.models import Rendition, Segment
from core.settings import Settings
from core.storage import ObjectStore
from ingest import sessions
from ingest.publication import Publication
from ingest.spool import Spool, SpoolFullError
from media.ladder import SOURCE
from packager.celery_app import make_celery
from tests.media import flv_items, make_source, package_flv
from tests.network_cut import NetworkCut
from tests.services import wait_for

AUTH = {"Authorization": "Bearer test-token"}


@pytest.fixture
def outage_store(settings: Settings) -> Iterator[tuple[NetworkCut, ObjectStore]]:
    """The session's S3 server, reached through a network path the test can cut."""
    with NetworkCut(urlsplit(settings.s3_endpoint).port) as path:
        store = ObjectStore(
            f"http://127.0.0.1:{path.port}",
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
        )
        store.ensure_bucket()
        yield path, store


@pytest.fixture(scope="module")
def stream_key(settings: Settings) -> Iterator[str]:
    with TestClient(create_app(settings), headers=AUTH) as api:
        response = api.post("/api/v1/streams", json={"name": "spooled", "ladder": []})
        assert response.status_code == 201, response.text
        yield response.json()["stream_key"]


def _recorded(settings: Settings, session_id: uuid.UUID) -> list[Segment]:
    with session_scope(settings.database_url) as db:
        return list(
            db.scalars(
                select(Segment)
                .join(Rendition)
                .where(Rendition.session_id == session_id, Rendition.name == SOURCE)
                .order_by(Segment.sequence)
            )
        )


def test_segments_closed_while_the_store_is_down_are_stored_whole_once_it_is_back(
    settings: Settings,
    outage_store: tuple[NetworkCut, ObjectStore],
    stream_key: str,
    tmp_path: Path,
) -> None:
    path, store = outage_store
    source = make_source(tmp_path / "live.flv", seconds=8, size="320x240")
    items = flv_items(source)
    expected = len(package_flv(source))  # the last one closes when the publish ends
    grant = sessions.open_publish(settings.database_url, stream_key, "rtmp", 10.0)
    spool = Spool(tmp_path / "spool", settings.spool_max_bytes)
    redis = Redis.from_url(settings.redis_url)
    celery = make_celery(settings.redis_url)

    async def publish_through_the_outage() -> None:
        publication = Publication(
            replace(grant, transcode=False), settings, store, redis, celery, spool
        )
        path.cut()
        publication.push(items, 0)
        closed = expected - 1
        # Everything closed so far is on disk, and nothing is recorded without its object.
        await asyncio.to_thread(wait_for, lambda: spool.waiting == closed, 30, "spooled")
        assert len(list((tmp_path / "spool").rglob("*.m4s"))) == closed
        await asyncio.sleep(3)  # several whole tries fail meanwhile
        assert _recorded(settings, grant.session_id) == []
        path.restore()
        await publication.finish()

    asyncio.run(publish_through_the_outage())
    redis.close()
    sessions.close_publish(settings.database_url, grant.session_id, explicit=True)

    rows = _recorded(settings, grant.session_id)
    assert [row.sequence for row in rows] == list(range(expected))
    assert (spool.used_bytes, spool.waiting) == (0, 0)
    assert list((tmp_path / "spool").rglob("*")) == []
    objects = [store.get_bytes(row.object_key) for row in rows]
    assert [len(data) for data in objects] == [row.size_bytes for row in rows]
    media = store.get_bytes(rows[0].init_key) + b"".join(objects)
    with av.open(io.BytesIO(media)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 8 * 30  # every frame of the 8 s source, decoded


def test_a_full_spool_refuses_new_publishes_with_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1000)
    spool.check_room()
    entry = spool.put(uuid.uuid4(), 7, b"x" * 1000)
    with pytest.raises(SpoolFullError, match=r"NEBULA_SPOOL_MAX_BYTES"):
        spool.check_room()
    assert spool.read(entry) == b"x" * 1000
    spool.remove(entry)
    spool.check_room()
    assert (spool.used_bytes, spool.waiting) == (0, 0)
