"""Streams: what a developer creates and hands to a streamer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, status

from api.deps import Authorized, DbSession, SettingsDep
from api.schemas import StreamCreate, StreamOut
from core.models import Stream
from core.stream_keys import hash_stream_key, new_stream_key

router = APIRouter(prefix="/api/v1/streams", tags=["streams"], dependencies=[Authorized])


def get_stream_or_404(db: DbSession, stream_id: uuid.UUID) -> Stream:
    stream = db.get(Stream, stream_id)
    if stream is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"stream {stream_id} not found")
    return stream


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StreamOut)
def create_stream(body: StreamCreate, db: DbSession, settings: SettingsDep) -> StreamOut:
    """Create a stream; the answer carries its stream key, which is not shown again."""
    key = new_stream_key()
    stream = Stream(name=body.name, stream_key_hash=hash_stream_key(key), status="idle")
    db.add(stream)
    db.commit()
    db.refresh(stream)
    return StreamOut.build(stream, settings, stream_key=key)


@router.get("/{stream_id}", response_model=StreamOut)
def get_stream(stream_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> StreamOut:
    return StreamOut.build(get_stream_or_404(db, stream_id), settings)
