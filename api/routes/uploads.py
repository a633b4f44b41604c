"""Uploads: a file in, the same HLS ladder out, as the recording of a session of its own.

The body streams into the bucket as it arrives (`api.upload_body`); then the file is probed
where it lies (ranged reads). A refusal deletes it, so a refused upload leaves no object and
no row behind.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool

from api.deps import Authorized, DbSession, SettingsDep, StoreDep
from api.schemas import UploadOut
from api.upload_body import FILE_FIELD, NAME_FIELD, Received, receive_file
from core.db import session_scope
from core.models import LiveSession, SessionStatus, Upload, UploadStatus
from core.settings import Settings
from core.storage import ObjectStore
from packager.enqueue import enqueue_upload
from packager.transcoding.upload_probe import (
    DecodeLimits,
    NotMediaError,
    ProbedMedia,
    UnusableMediaError,
    probe_upload,
)
from packager.uploads import PROBE_INFO_KEY, upload_object_key

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"], dependencies=[Authorized])

# Multipart framing around the file (boundaries, part headers, the name field): a body
# whose Content-Length exceeds the limit by more than this is refused before it is read.
MULTIPART_OVERHEAD_BYTES = 16 * 1024

MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {"type": "string", "format": "binary"},
                        NAME_FIELD: {"type": "string", "maxLength": 200},
                    },
                }
            }
        },
    }
}


def _probe(store: ObjectStore, key: str, limits: DecodeLimits) -> ProbedMedia:
    with store.open_reader(key) as file:
        return probe_upload(file, limits)


def _create_rows(
    database_url: str, upload_id: uuid.UUID, key: str, received: Received, probed: ProbedMedia
) -> Upload:
    """The upload and its session in one transaction: both exist, or neither."""
    with session_scope(database_url) as db:
        session = LiveSession(
            stream_id=None,
            protocol="upload",
            status=SessionStatus.LIVE,
            media_info={PROBE_INFO_KEY: probed.describe()},
        )
        db.add(session)
        db.flush()
        upload = Upload(
            id=upload_id,
            name=(received.name or received.filename or "upload")[:200],
            filename=received.filename or "",
            status=UploadStatus.PROCESSING,
            progress=0.0,
            object_key=key,
            size_bytes=received.size,
            session_id=session.id,
            duration_seconds=probed.duration_seconds,
        )
        db.add(upload)
        db.flush()
        db.refresh(upload)
        db.expunge(upload)
        return upload


def _delete_rows(database_url: str, upload_id: uuid.UUID, session_id: uuid.UUID) -> None:
    with session_scope(database_url) as db:
        db.delete(db.get(Upload, upload_id))
        db.delete(db.get(LiveSession, session_id))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadOut,
    summary="Upload a media file; it is processed into an HLS ladder",
    openapi_extra=MULTIPART_BODY,
    responses={
        413: {"description": "Larger than NEBULA_MAX_UPLOAD_BYTES"},
        415: {"description": "Not a media file, a container not accepted, or not multipart"},
        422: {
            "description": "Media, but unusable: no video, broken or truncated, or larger, "
            "longer or faster than NEBULA_UPLOAD_MAX_PIXELS, _SECONDS, _FRAME_RATE allow"
        },
    },
)
async def create_upload(request: Request, settings: SettingsDep, store: StoreDep) -> UploadOut:
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the body ({declared} bytes) is larger than this server accepts "
            f"({limit} bytes, NEBULA_MAX_UPLOAD_BYTES)",
        )
    upload_id = uuid.uuid4()
    key = upload_object_key(upload_id)
    received = await receive_file(request, store, key, limit)
    try:
        probed = await run_in_threadpool(_probe, store, key, DecodeLimits.from_settings(settings))
    except (NotMediaError, UnusableMediaError) as exc:
        await run_in_threadpool(store.delete, key)
        code = (
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
            if isinstance(exc, NotMediaError)
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, str(exc)) from exc
    except Exception:
        await run_in_threadpool(store.delete, key)
        raise
    return await run_in_threadpool(
        _accept, request, settings, store, upload_id, key, received, probed
    )


def _accept(
    request: Request,
    settings: Settings,
    store: ObjectStore,
    upload_id: uuid.UUID,
    key: str,
    received: Received,
    probed: ProbedMedia,
) -> UploadOut:
    upload = _create_rows(settings.database_url, upload_id, key, received, probed)
    try:
        enqueue_upload(request.app.state.celery, upload_id)
    except Exception as exc:
        _delete_rows(settings.database_url, upload_id, upload.session_id)
        store.delete(key)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the job queue is unavailable: {exc}"
        ) from exc
    return UploadOut.build(upload, settings)


@router.get("/{upload_id}", response_model=UploadOut)
def get_upload(upload_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> UploadOut:
    upload = db.get(Upload, upload_id)
    if upload is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"upload {upload_id} not found")
    return UploadOut.build(upload, settings)
