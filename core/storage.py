"""Object storage through the MinIO SDK: MinIO in production, the embedded S3 store on a laptop."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import md5sum_hash

from core.delivery import bucket_cors_configuration
from core.settings import Settings

log = logging.getLogger(__name__)

# Short timeouts and few retries: a stalled store must surface as an error, not a hung ingest.
_HTTP = urllib3.PoolManager(
    timeout=urllib3.Timeout(connect=3.0, read=30.0),
    maxsize=32,
    retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
)


# Parts of a streamed upload: S3's minimum is 5 MiB. With two uploading while the next fills,
# a stream of any length holds about three parts in memory.
STREAM_PART_BYTES = 8 * 1024 * 1024
STREAM_PARALLEL_PARTS = 2
# One ranged GET per this many bytes when a reader walks an object.
READ_AHEAD_BYTES = 2 * 1024 * 1024


# What the SDK raises for the server's answers (S3Error, ServerError, InvalidResponseError)
# and what urllib3 raises below it (refused, reset, timed out, retries spent).
_CLIENT_ERRORS = (MinioException, urllib3.exceptions.HTTPError)
_NOT_FOUND_CODES = ("NoSuchKey", "NoSuchObject")


class StorageError(RuntimeError):
    """The object store refused or could not be reached; the message names the key involved.

    The only error the store's methods raise for a store fault, so callers need not know the
    SDK or its HTTP client."""


class ObjectNotFoundError(StorageError):
    """No object under that key. A `StorageError` too, but one that retrying cannot fix, so
    callers that can say what a missing object means catch it first."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key


@contextmanager
def _translated(action: str, key: str) -> Iterator[None]:
    """Turn the SDK's and urllib3's errors inside the block into ours."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND_CODES:
            raise ObjectNotFoundError(key) from exc
        raise StorageError(f"{action} {key!r} failed: {exc.code}") from exc
    except _CLIENT_ERRORS as exc:
        raise StorageError(f"{action} {key!r} failed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


def split_endpoint(endpoint: str) -> tuple[str, bool]:
    """`http://host:9000` or `host:9000` → (`host:9000`, secure)."""
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        return parsed.netloc, parsed.scheme == "https"
    return endpoint, False


class ObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str | None = None,
    ) -> None:
        host, secure = split_endpoint(endpoint)
        self.bucket = bucket
        self.client = Minio(
            host,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_HTTP,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        if not settings.s3_endpoint or not settings.s3_secret_key:
            raise StorageError("NEBULA_S3_ENDPOINT and NEBULA_S3_SECRET_KEY must be set")
        return cls(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            settings.s3_region,
        )

    def ensure_bucket(self, cors_origins: Sequence[str] | None = None) -> None:
        """Create the bucket if missing. With `cors_origins`, give it the CORS rule that
        lets players on those sites read objects (through a CDN in front of it); an empty
        list removes our rule (the store's own default then applies), None leaves it."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create bucket {self.bucket!r}: {exc.code}") from exc
        except _CLIENT_ERRORS as exc:
            raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc
        if cors_origins is not None:
            self._set_cors(cors_origins)

    def _set_cors(self, origins: Sequence[str]) -> None:
        # minio-py (7.2) has no bucket CORS call; this is the request its own policy call makes.
        body = bucket_cors_configuration(origins) if origins else None
        try:
            self.client._execute(
                "PUT" if body else "DELETE",
                self.bucket,
                body=body,
                headers={"Content-MD5": md5sum_hash(body)} if body else None,
                query_params={"cors": ""},
            )
        except S3Error as exc:
            if exc.code == "NotImplemented":
                # MinIO: its server-wide MINIO_API_CORS_ALLOW_ORIGIN (default `*`) applies.
                log.warning("the object store has no bucket CORS; its own CORS setting applies")
            elif exc.code != "NoSuchCORSConfiguration":
                raise StorageError(f"cannot set CORS on bucket {self.bucket!r}: {exc}") from exc
        except _CLIENT_ERRORS as exc:
            raise StorageError(f"cannot set CORS on bucket {self.bucket!r}: {exc}") from exc

    def put_bytes(
        self, key: str, data: bytes, content_type: str, *, cache_control: str | None = None
    ) -> None:
        """Store one object; `cache_control` is kept and served with it (to a CDN in front)."""
        with _translated("put", key):
            self.client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={"Cache-Control": cache_control} if cache_control else None,
            )

    def put_stream(self, key: str, stream: BinaryIO, content_type: str) -> None:
        """Store a stream of unknown length: one PUT if it fits a part, else a multipart
        upload. If reading `stream` raises, the multipart upload is aborted and the error
        propagates unchanged, so nothing is left behind."""
        with _translated("put", key):
            self.client.put_object(
                self.bucket,
                key,
                stream,
                -1,
                content_type=content_type,
                part_size=STREAM_PART_BYTES,
                num_parallel_uploads=STREAM_PARALLEL_PARTS,
            )

    def size_of(self, key: str) -> int:
        with _translated("stat", key):
            return self.client.stat_object(self.bucket, key).size or 0

    def open_reader(self, key: str) -> io.BufferedReader:
        """A seekable, buffered file object over the object: ranged GETs, no local copy."""
        return io.BufferedReader(RangedReader(self, key, self.size_of(key)), READ_AHEAD_BYTES)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (0 and 0: the whole object)."""
        with _translated("get", key):
            response = self.client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                return response.read()  # the body can fail too: reset, timed out
            finally:
                response.close()
                response.release_conn()

    def get_bytes(self, key: str) -> bytes:
        return self.get_range(key, 0, 0)

    def list_keys(self, prefix: str) -> Iterator[StoredObject]:
        """Lazily, page by page: a fault surfaces from the iteration."""
        with _translated("list", prefix):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                yield StoredObject(obj.object_name, obj.size or 0)

    def delete(self, key: str) -> None:
        """Deleting a missing key is a no-op, as in S3."""
        with _translated("delete", key):
            self.client.remove_object(self.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        keys = [DeleteObject(o.key) for o in self.list_keys(prefix)]
        with _translated("delete under", prefix):
            errors = list(self.client.remove_objects(self.bucket, keys))
        if errors:
            raise StorageError(f"delete under {prefix!r} failed for {len(errors)} objects")
        return len(keys)

    def check(self) -> None:
        """Raise unless the bucket answers: the health probe."""
        try:
            if not self.client.bucket_exists(self.bucket):
                raise StorageError(f"bucket {self.bucket!r} does not exist")
        except _CLIENT_ERRORS as exc:
            raise StorageError(f"object store unreachable: {exc}") from exc


class RangedReader(io.RawIOBase):
    """A seekable view of one object, each read a ranged GET (wrap it in a BufferedReader)."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset} before the start of {self.key!r}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self.size - self.position)
        if wanted <= 0:
            return 0
        data = self.store.get_range(self.key, self.position, wanted)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
