"""Server side of the RTMP handshake: C0 C1 in, S0 S1 S2 out, then C2 in.

Two forms are accepted. The plain form (RTMP spec section 5.2) echoes C1 as S2. The digest
form ("complex" handshake of Flash Player 9 and later, also sent by FFmpeg and librtmp)
hides an HMAC-SHA256 digest in C1 at one of two scheme offsets; we then answer with an S1
that carries our own digest at the same scheme and an S2 whose last 32 bytes are keyed on
the client's digest, which is what digest-checking clients verify.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from ingest.rtmp.errors import HandshakeError

RTMP_VERSION = 3
HANDSHAKE_PACKET_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
# C1 digests use only the text part of the player key, S1 digests the text part of the
# server key; the full server key derives the S2 signing key.
CLIENT_DIGEST_KEY = GENUINE_FP_KEY[:30]
SERVER_DIGEST_KEY = GENUINE_FMS_KEY[:36]
# The two places a digest may sit: bytes [base, base+4) give its offset inside the
# 728-byte window that follows them.
DIGEST_SCHEME_BASES = (8, 772)
SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))


def digest_offset(packet: bytes | bytearray, scheme_base: int) -> int:
    """Offset of the 32-byte digest inside a 1536-byte C1/S1 for the given scheme."""
    return sum(packet[scheme_base : scheme_base + 4]) % 728 + scheme_base + 4


def packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 of the packet with the 32 digest bytes at ``offset`` left out."""
    mac = hmac.new(key, packet[:offset], hashlib.sha256)
    mac.update(packet[offset + DIGEST_SIZE :])
    return mac.digest()


def find_client_digest(c1: bytes) -> tuple[bytes, int] | None:
    """Return (digest, scheme base) if C1 carries a valid Flash Player digest, else None."""
    if c1[4:8] == b"\x00\x00\x00\x00":  # plain clients send a zero version field
        return None
    for base in DIGEST_SCHEME_BASES:
        offset = digest_offset(c1, base)
        found = c1[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(found, packet_digest(c1, offset, CLIENT_DIGEST_KEY)):
            return bytes(found), base
    return None


def build_digest_s1(scheme_base: int, random_bytes: Callable[[int], bytes]) -> bytes:
    """S1 with our server digest placed by ``scheme_base``, like a Flash Media Server."""
    s1 = bytearray(b"\x00\x00\x00\x00" + SERVER_VERSION + random_bytes(HANDSHAKE_PACKET_SIZE - 8))
    offset = digest_offset(s1, scheme_base)
    s1[offset : offset + DIGEST_SIZE] = packet_digest(s1, offset, SERVER_DIGEST_KEY)
    return bytes(s1)


def build_digest_s2(client_digest: bytes, random_bytes: Callable[[int], bytes]) -> bytes:
    """S2 signed with a key derived from the client's C1 digest."""
    body = random_bytes(HANDSHAKE_PACKET_SIZE - DIGEST_SIZE)
    key = hmac.new(GENUINE_FMS_KEY, client_digest, hashlib.sha256).digest()
    return body + hmac.new(key, body, hashlib.sha256).digest()


class ServerHandshake:
    """Consumes C0 C1 and C2 from the front of the shared receive buffer."""

    __slots__ = ("_random_bytes", "_sent_response", "done", "uses_digest")

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random_bytes = random_bytes
        self._sent_response = False
        self.done = False
        self.uses_digest = False

    def receive(self, buffer: bytearray) -> bytes:
        """Take what the handshake needs from ``buffer``; return bytes to send (maybe b"")."""
        reply = b""
        if not self._sent_response:
            if buffer and buffer[0] != RTMP_VERSION:
                raise HandshakeError(
                    "unsupported RTMP version in C0", value=buffer[0], expected=RTMP_VERSION
                )
            if len(buffer) < 1 + HANDSHAKE_PACKET_SIZE:
                return reply
            c1 = bytes(buffer[1 : 1 + HANDSHAKE_PACKET_SIZE])
            del buffer[: 1 + HANDSHAKE_PACKET_SIZE]
            reply = self._response(c1)
            self._sent_response = True
        if len(buffer) >= HANDSHAKE_PACKET_SIZE:
            del buffer[:HANDSHAKE_PACKET_SIZE]  # C2: content not checked, clients differ
            self.done = True
        return reply

    def _response(self, c1: bytes) -> bytes:
        found = find_client_digest(c1)
        if found is None:
            s1 = b"\x00" * 8 + self._random_bytes(HANDSHAKE_PACKET_SIZE - 8)
            return bytes((RTMP_VERSION,)) + s1 + c1
        client_digest, scheme_base = found
        self.uses_digest = True
        s1 = build_digest_s1(scheme_base, self._random_bytes)
        s2 = build_digest_s2(client_digest, self._random_bytes)
        return bytes((RTMP_VERSION,)) + s1 + s2
