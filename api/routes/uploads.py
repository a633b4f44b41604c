"""Uploads: a file in, the same HLS ladder out, as the recording of a session of its own.

The body is parsed as it arrives (python-multipart's streaming parser, not `UploadFile`,
which spools the whole file) and the `file` part flows through a bounded pipe into an S3
upload, multipart beyond one part: memory stays at a few parts whatever the file's size.
Then the file is probed where it lies (ranged reads); a refusal deletes it, so a refused
upload leaves no object and no row behind.
"""

from __future__ import annotations

import asyncio
import io
import queue
import uuid
from dataclasses import dataclass, field
from pathlib import PurePath

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from api.deps import Authorized, DbSession, SettingsDep, StoreDep
from api.schemas import UploadOut
from core.db import session_scope
from core.models import LiveSession, Upload
from core.settings import Settings
from core.storage import ObjectStore, StorageError
from packager.upload_probe import NotMedia, ProbedMedia, UnusableMedia, probe_upload
from packager.uploads import PROBE_INFO_KEY, PROCESSING, enqueue_upload, upload_object_key

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"], dependencies=[Authorized])

FILE_FIELD, NAME_FIELD = "file", "name"
# Multipart framing around the file (boundaries, part headers, the name field): a body
# whose Content-Length exceeds the limit by more than this is refused before it is read.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
MAX_NAME_BYTES = 200 * 4  # 200 characters of UTF-8
MAX_FILENAME_CHARS = 500
# Chunks of the body waiting for the S3 upload thread; beyond that the request waits.
PIPE_CHUNKS = 16
PIPE_WAIT_SECONDS = 0.01

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


class UploadAborted(Exception):
    """The request stopped sending the file (too large, malformed, gone): abandon the S3 write."""


class _Pipe(io.RawIOBase):
    """Body chunks from the event loop to the thread writing S3, at most PIPE_CHUNKS queued."""

    def __init__(self) -> None:
        self._chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(PIPE_CHUNKS)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._rest:
            item = self._chunks.get()
            if item is None:
                self._chunks.put(None)  # stay at end of stream for later reads
                return 0
            if isinstance(item, BaseException):
                raise item
            self._rest = item
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size

    async def send(self, item: bytes | BaseException | None, writer: asyncio.Future) -> None:
        """Queue one item; waits while the queue is full, unless the writer already ended."""
        while not writer.done():
            try:
                self._chunks.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(PIPE_WAIT_SECONDS)


@dataclass
class _Form:
    """What the parser has seen so far; the file's bytes wait in `pending` for the pipe."""

    headers: dict[str, str] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""
    part: str | None = None
    filename: str | None = None
    name: bytes = b""
    file_started: bool = False
    file_done: bool = False
    size: int = 0
    pending: list[bytes] = field(default_factory=list)
    error: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.headers, self.part = {}, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        self.headers[self.header_name.decode("latin-1").lower()] = self.header_value.decode(
            "utf-8", "replace"
        )
        self.header_name = self.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", ""))
        self.part = options.get(b"name", b"").decode("utf-8", "replace")
        if self.part == FILE_FIELD:
            if self.file_started:
                self.error = f"more than one `{FILE_FIELD}` part; send one file per upload"
            self.file_started = True
            raw = options.get(b"filename", b"").decode("utf-8", "replace")
            self.filename = PurePath(raw.replace("\\", "/")).name[:MAX_FILENAME_CHARS] or None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part == FILE_FIELD:
            self.pending.append(data[start:end])
            self.size += end - start
        elif self.part == NAME_FIELD:
            self.name += data[start:end]
            if len(self.name) > MAX_NAME_BYTES:
                self.error = "`name` is longer than 200 characters"

    def _part_end(self) -> None:
        if self.part == FILE_FIELD:
            self.file_done = True
        self.part = None


@dataclass(frozen=True, slots=True)
class _Received:
    filename: str | None
    name: str | None
    size: int


def _refuse(code: int, detail: str) -> HTTPException:
    return HTTPException(code, detail=detail)


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _refuse(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"expected a multipart/form-data body with a `{FILE_FIELD}` field",
        )
    return boundary


async def _receive(request: Request, store: ObjectStore, key: str, limit: int) -> _Received:
    """Stream the `file` part into the bucket; on any refusal, nothing is left stored."""
    form = _Form()
    parser = MultipartParser(_boundary(request), form.callbacks())
    pipe = _Pipe()
    writer: asyncio.Future | None = None
    failure: HTTPException | None = None
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if form.error:
                failure = _refuse(status.HTTP_400_BAD_REQUEST, form.error)
            elif form.size > limit:
                failure = _refuse(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"the file is larger than this server accepts "
                    f"({limit} bytes, NEBULA_MAX_UPLOAD_BYTES)",
                )
            if failure:
                break
            if form.file_started and writer is None:
                # Buffered: the store asks for a whole part per read, in one piece.
                body = io.BufferedReader(pipe)
                writer = asyncio.ensure_future(
                    run_in_threadpool(store.put_stream, key, body, "application/octet-stream")
                )
            for data in form.pending:
                await pipe.send(data, writer)
            form.pending.clear()
            if writer is not None and writer.done():
                break  # the store failed: its error surfaces below
        else:
            parser.finalize()
    except MultipartParseError as exc:
        failure = _refuse(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}")
    except ClientDisconnect:
        failure = _refuse(status.HTTP_400_BAD_REQUEST, "the client went away mid-upload")
    if writer is not None:
        await pipe.send(UploadAborted() if failure else None, writer)
        try:
            await writer
        except UploadAborted:
            pass
        except StorageError as exc:
            failure = failure or _refuse(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"object store unavailable: {exc}"
            )
    if failure is None and form.file_started and not form.file_done:
        failure = _refuse(
            status.HTTP_400_BAD_REQUEST, f"the body ended inside the `{FILE_FIELD}` part"
        )
    if failure is None and not form.file_done:
        failure = _refuse(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"missing multipart field `{FILE_FIELD}`"
        )
    if failure is not None:
        if writer is not None and failure.status_code != status.HTTP_503_SERVICE_UNAVAILABLE:
            await run_in_threadpool(_delete_if_stored, store, key)
        raise failure
    name = form.name.decode("utf-8", "replace").strip() or None
    return _Received(form.filename, name, form.size)


def _delete_if_stored(store: ObjectStore, key: str) -> None:
    """An aborted multipart upload stores nothing; a body that fit in one part may have been
    stored whole just before the refusal."""
    try:
        store.size_of(key)
    except KeyError:
        return
    store.delete(key)


def _probe(store: ObjectStore, key: str) -> ProbedMedia:
    with store.open_reader(key) as file:
        return probe_upload(file)


def _create_rows(
    database_url: str, upload_id: uuid.UUID, key: str, received: _Received, probed: ProbedMedia
) -> Upload:
    """The upload and its session in one transaction: both exist, or neither."""
    with session_scope(database_url) as db:
        session = LiveSession(
            stream_id=None,
            protocol="upload",
            status="live",
            media_info={PROBE_INFO_KEY: probed.describe()},
        )
        db.add(session)
        db.flush()
        upload = Upload(
            id=upload_id,
            name=(received.name or received.filename or "upload")[:200],
            filename=received.filename or "",
            status=PROCESSING,
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
        415: {"description": "Not a media file (or not a multipart body)"},
        422: {"description": "Media, but unusable: no video, broken or truncated"},
    },
)
async def create_upload(request: Request, settings: SettingsDep, store: StoreDep) -> UploadOut:
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise _refuse(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the body ({declared} bytes) is larger than this server accepts "
            f"({limit} bytes, NEBULA_MAX_UPLOAD_BYTES)",
        )
    upload_id = uuid.uuid4()
    key = upload_object_key(upload_id)
    received = await _receive(request, store, key, limit)
    try:
        probed = await run_in_threadpool(_probe, store, key)
    except (NotMedia, UnusableMedia) as exc:
        await run_in_threadpool(store.delete, key)
        code = (
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
            if isinstance(exc, NotMedia)
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise _refuse(code, str(exc)) from exc
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
    received: _Received,
    probed: ProbedMedia,
) -> UploadOut:
    upload = _create_rows(settings.database_url, upload_id, key, received, probed)
    try:
        enqueue_upload(request.app.state.celery, upload_id)
    except Exception as exc:
        _delete_rows(settings.database_url, upload_id, upload.session_id)
        store.delete(key)
        raise _refuse(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the job queue is unavailable: {exc}"
        ) from exc
    return UploadOut.build(upload, settings)


@router.get("/{upload_id}", response_model=UploadOut)
def get_upload(upload_id: uuid.UUID, db: DbSession, settings: SettingsDep) -> UploadOut:
    upload = db.get(Upload, upload_id)
    if upload is None:
        raise _refuse(status.HTTP_404_NOT_FOUND, f"upload {upload_id} not found")
    return UploadOut.build(upload, settings)
