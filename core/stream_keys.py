"""Stream keys: 192 random bits handed out once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_BYTES = 24


def new_stream_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def hash_stream_key(key: str) -> str:
    """An unsalted digest is enough: keys are random, so there is nothing to precompute."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_stream_key(key), stored_hash)
