"""The body of `POST /api/v1/uploads`: a multipart form parsed as it arrives, its `file` part
streamed into the bucket.

python-multipart's streaming parser (not `UploadFile`, which spools the whole file) feeds the
file's bytes through a bounded pipe to a thread writing one S3 upload, multipart beyond one
part: memory stays at a few parts whatever the file's size. Any refusal (too large,
malformed, the client gone) leaves nothing stored.
"""

from __future__ import annotations

import asyncio
import io
import queue
from dataclasses import dataclass, field
from pathlib import PurePath

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from core.storage import ObjectStore, StorageError

FILE_FIELD, NAME_FIELD = "file", "name"
MAX_NAME_BYTES = 200 * 4  # 200 characters of UTF-8
MAX_FILENAME_CHARS = 500
# A form needs two parts (`file`, `name`) with a few short headers each; these leave room
# for what clients add, and stop a body that is all headers or all parts.
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_PARTS = 16
# Chunks of the body waiting for the S3 upload thread; beyond that the request waits.
PIPE_CHUNKS = 16
PIPE_WAIT_SECONDS = 0.01


class UploadAbortedError(Exception):
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
    header_bytes: int = 0
    parts: int = 0
    part: str | None = None
    filename: str | None = None
    name: bytes = b""
    file_started: bool = False
    file_done: bool = False
    size: int = 0
    pending: list[bytes] = field(default_factory=list)
    error: HTTPException | None = None

    def refuse(self, message: str, code: int = status.HTTP_400_BAD_REQUEST) -> None:
        self.error = self.error or HTTPException(code, message)

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
        self.headers, self.part, self.header_bytes = {}, None, 0
        self.parts += 1
        if self.parts > MAX_PARTS:
            self.refuse(
                f"more than {MAX_PARTS} multipart parts; send `{FILE_FIELD}` and `{NAME_FIELD}`"
            )

    def _count_header_bytes(self, size: int) -> bool:
        """Whether the part's headers still fit; refuses the body once they do not."""
        self.header_bytes += size
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            self.refuse(
                f"a multipart part's headers are larger than {MAX_PART_HEADER_BYTES} bytes",
                status.HTTP_413_CONTENT_TOO_LARGE,
            )
            return False
        return True

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        if self._count_header_bytes(end - start):
            self.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._count_header_bytes(end - start):
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
                self.refuse(f"more than one `{FILE_FIELD}` part; send one file per upload")
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
                self.refuse("`name` is longer than 200 characters")

    def _part_end(self) -> None:
        if self.part == FILE_FIELD:
            self.file_done = True
        self.part = None


@dataclass(frozen=True, slots=True)
class Received:
    filename: str | None
    name: str | None
    size: int


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"expected a multipart/form-data body with a `{FILE_FIELD}` field",
        )
    return boundary


async def receive_file(request: Request, store: ObjectStore, key: str, limit: int) -> Received:
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
                failure = form.error
            elif form.size > limit:
                failure = HTTPException(
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
        failure = HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}")
    except ClientDisconnect:
        failure = HTTPException(status.HTTP_400_BAD_REQUEST, "the client went away mid-upload")
    if writer is not None:
        await pipe.send(UploadAbortedError() if failure else None, writer)
        try:
            await writer
        except UploadAbortedError:
            pass
        except StorageError as exc:
            failure = failure or HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"object store unavailable: {exc}"
            )
    if failure is None and form.file_started and not form.file_done:
        failure = HTTPException(
            status.HTTP_400_BAD_REQUEST, f"the body ended inside the `{FILE_FIELD}` part"
        )
    if failure is None and not form.file_done:
        failure = HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"missing multipart field `{FILE_FIELD}`"
        )
    if failure is not None:
        if writer is not None and failure.status_code != status.HTTP_503_SERVICE_UNAVAILABLE:
            # An aborted multipart upload stored nothing, but a body that fit in one part may
            # have been stored whole just before the refusal; deleting a missing key is a no-op.
            await run_in_threadpool(store.delete, key)
        raise failure
    name = form.name.decode("utf-8", "replace").strip() or None
    return Received(form.filename, name, form.size)
