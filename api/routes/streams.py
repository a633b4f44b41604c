"""Streams: what a developer creates, hands to a streamer, and manages while it runs."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import func, select

from api.deps import (
    Authorized,
    DbSession,
    PageLimit,
    PageOffset,
    RedisDep,
    SettingsDep,
    StoreDep,
    get_stream_or_404,
)
from api.schemas import DisconnectOut, StreamCreate, StreamOut, StreamPage, StreamUpdate
from core.events import ControlAction, publish_control
from core.models import Stream, StreamStatus
from core.storage import StorageError
from core.stream_keys import hash_stream_key, new_stream_key
from packager.keys import stream_prefix

router = APIRouter(prefix="/api/v1/streams", tags=["streams"], dependencies=[Authorized])

# `DELETE ?force=true` waits this long for the ingest to end the session it dropped.
FORCE_DELETE_WAIT_SECONDS = 5.0


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StreamOut)
def create_stream(body: StreamCreate, db: DbSession, settings: SettingsDep) -> StreamOut:
    """Create a stream; the answer carries its stream key, which is not shown again."""
    key = new_stream_key()
    stream = Stream(
        name=body.name,
        stream_key_hash=hash_stream_key(key),
        status=StreamStatus.IDLE,
        ladder=body.ladder,
    )
    db.add(stream)
    db.commit()
    db.refresh(stream)
    return StreamOut.build(stream, settings, stream_key=key)


@router.get("", response_model=StreamPage, summary="Streams, newest first")
def list_streams(
    db: DbSession,
    settings: SettingsDep,
    limit: PageLimit = 20,
    offset: PageOffset = 0,
    status_filter: Annotated[StreamStatus | None, Query(alias="status")] = None,
) -> StreamPage:
    query = select(Stream)
    if status_filter is not None:
        query = query.where(Stream.status == status_filter)
    total = db.scalar(select(func.count()).select_from(query.subquery()))
    streams = db.scalars(
        query.order_by(Stream.created_at.desc(), Stream.id).limit(limit).offset(offset)
    ).all()
    return StreamPage.of(
        [StreamOut.build(s, settings) for s in streams], total=total, limit=limit, offset=offset
    )


@router.get("/{stream_id}", response_model=StreamOut)
def get_stream(stream_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> StreamOut:
    return StreamOut.build(get_stream_or_404(db, stream_id), settings)


@router.patch("/{stream_id}", response_model=StreamOut)
def update_stream(
    stream_id: uuid.UUID,
    body: StreamUpdate,
    db: DbSession,
    redis: RedisDep,
    settings: SettingsDep,
) -> StreamOut:
    """Rename, change the ladder (from the next session on), enable or disable."""
    stream = get_stream_or_404(db, stream_id, lock=True)
    sent = body.model_fields_set
    if "name" in sent:
        if body.name is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="name cannot be null")
        stream.name = body.name
    if "ladder" in sent:
        stream.ladder = body.ladder
    drop_publisher = False
    if body.enabled is False and stream.status != StreamStatus.DISABLED:
        drop_publisher = stream.status == StreamStatus.LIVE
        stream.status = StreamStatus.DISABLED
    elif body.enabled is True and stream.status == StreamStatus.DISABLED:
        stream.status = StreamStatus.IDLE
    db.commit()
    if drop_publisher:
        publish_control(redis, ControlAction.DISCONNECT, str(stream.id))
    return StreamOut.build(stream, settings)


@router.delete(
    "/{stream_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a stream with its sessions and media",
)
def delete_stream(
    stream_id: uuid.UUID,
    db: DbSession,
    redis: RedisDep,
    store: StoreDep,
    force: Annotated[bool, Query(description="Disconnect a live publisher first.")] = False,
) -> Response:
    stream = get_stream_or_404(db, stream_id)
    if stream.status == StreamStatus.LIVE:
        if not force:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"stream {stream_id} is live; disconnect it first or pass ?force=true",
            )
        publish_control(redis, ControlAction.DISCONNECT, str(stream_id))
        _wait_not_live(db, stream)
    # Objects first, as retention does: should the store fail, the row stays and the delete
    # can be sent again; no object is left behind unlisted (and still served as immutable).
    try:
        store.delete_prefix(stream_prefix(stream_id))
    except StorageError as exc:
        db.rollback()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"stream {stream_id} was not deleted: the object store failed ({exc}); "
            "send the delete again",
        ) from exc
    db.delete(stream)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _wait_not_live(db: DbSession, stream: Stream) -> None:
    """Give the ingest time to store what it holds; past the wait, delete regardless."""
    deadline = time.monotonic() + FORCE_DELETE_WAIT_SECONDS
    while stream.status == StreamStatus.LIVE and time.monotonic() < deadline:
        time.sleep(0.1)
        db.commit()  # end the snapshot so the refresh sees the ingest's commit
        db.refresh(stream)


@router.post("/{stream_id}/reset-key", response_model=StreamOut)
def reset_key(stream_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> StreamOut:
    """Issue a new key; the old one is refused from now on. A publisher already live on the
    old key keeps its session until it disconnects."""
    stream = get_stream_or_404(db, stream_id)
    key = new_stream_key()
    stream.stream_key_hash = hash_stream_key(key)
    db.commit()
    return StreamOut.build(stream, settings, stream_key=key)


@router.post(
    "/{stream_id}/disconnect",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DisconnectOut,
    summary="Drop the live publisher; its session ends",
)
def disconnect(stream_id: uuid.UUID, db: DbSession, redis: RedisDep) -> DisconnectOut:
    stream = get_stream_or_404(db, stream_id)
    if stream.status != StreamStatus.LIVE:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"stream {stream_id} is {stream.status}, not live"
        )
    heard = publish_control(redis, ControlAction.DISCONNECT, str(stream_id))
    return DisconnectOut(stream_id=stream_id, ingest_processes=heard)
