"""The object-store client against a real S3 server."""

from __future__ import annotations

import uuid

import pytest

from core.storage import ObjectNotFoundError, ObjectStore, StorageError
from tests.services import S3Server, free_port


@pytest.fixture
def store(s3: S3Server) -> ObjectStore:
    store = ObjectStore(s3.endpoint, s3.access_key, s3.secret_key, f"b-{uuid.uuid4().hex[:10]}")
    store.ensure_bucket()
    store.ensure_bucket()  # creating it twice is harmless
    return store


def test_objects_are_put_read_listed_and_deleted(store: ObjectStore) -> None:
    store.put_bytes("a/one.m4s", b"\x00" * 1000, "video/iso.segment")
    store.put_bytes("a/two.m4s", b"two", "video/iso.segment")
    store.put_bytes("b/other", b"x", "application/octet-stream")
    assert store.get_bytes("a/two.m4s") == b"two"
    assert sorted((o.key, o.size) for o in store.list_keys("a/")) == [
        ("a/one.m4s", 1000),
        ("a/two.m4s", 3),
    ]
    store.delete("a/two.m4s")
    assert [o.key for o in store.list_keys("a/")] == ["a/one.m4s"]
    assert store.delete_prefix("a/") == 1
    assert list(store.list_keys("a/")) == []
    assert [o.key for o in store.list_keys("b/")] == ["b/other"]


def test_a_missing_object_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as missing:
        store.get_bytes("nope/missing")
    assert missing.value.key == "nope/missing"
    with pytest.raises(ObjectNotFoundError):
        store.size_of("nope/missing")


def test_wrong_credentials_are_reported_as_storage_errors(s3: S3Server) -> None:
    store = ObjectStore(s3.endpoint, s3.access_key, "wrong-secret", "whatever")
    with pytest.raises(StorageError, match="unreachable|InvalidAccessKeyId|SignatureDoesNotMatch"):
        store.check()


def test_an_unreachable_store_raises_storage_errors_from_every_call() -> None:
    store = ObjectStore(f"http://127.0.0.1:{free_port()}", "key", "secret", "whatever")
    calls = {
        "delete": lambda: store.delete("a/key"),
        "list_keys": lambda: list(store.list_keys("a/")),
        "delete_prefix": lambda: store.delete_prefix("a/"),
        "get_bytes": lambda: store.get_bytes("a/key"),
        "size_of": lambda: store.size_of("a/key"),
        "put_bytes": lambda: store.put_bytes("a/key", b"x", "application/octet-stream"),
        "ensure_bucket": store.ensure_bucket,
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as failed:
            call()
        assert type(failed.value) is StorageError, name  # a fault, not a missing object
        assert "127.0.0.1" in str(failed.value), name
