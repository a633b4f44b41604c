"""Stream keys: 192 random bits handed out once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_BYTES = 24
KEY_LENGTH = 32  # characters of token_urlsafe(KEY_BYTES)
KEY_ALPHABET = "A-Z a-z 0-9 - _"
_KEY_FORMAT = re.compile(rf"[A-Za-z0-9_-]{{{KEY_LENGTH}}}")


def new_stream_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def hash_stream_key(key: str) -> str:
    """An unsalted digest is enough: keys are random, so there is nothing to precompute."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_stream_key(key), stored_hash)


def is_well_formed(key: str) -> bool:
    """Whether `key` has the shape of a key we hand out: a cheap test before any lookup."""
    return _KEY_FORMAT.fullmatch(key) is not None
