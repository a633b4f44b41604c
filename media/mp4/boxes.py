"""Generic ISO BMFF (ISO/IEC 14496-12) box and MPEG-4 descriptor building primitives.

These are used for the init segment, which is built once per stream, so clarity wins over
speed here. The per-segment hot path in ``media.mp4.fmp4`` writes its boxes with
``struct.pack_into`` into one preallocated buffer instead.
"""

from __future__ import annotations

import struct

BOX_HEADER_SIZE = 8
FULL_BOX_HEADER_SIZE = 12
_MAX_BOX_SIZE = 0xFFFF_FFFF


class Fmp4Error(ValueError):
    """Input that cannot be written as fMP4; the message names the value and the expectation."""


# Unity transformation matrix of mvhd/tkhd (16.16 fixed point, last column 2.30).
UNITY_MATRIX = struct.pack(">9I", 0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000)


def box(fourcc: bytes, *payload: bytes) -> bytes:
    """A plain box: 32-bit size, four-character type, then the payload parts."""
    if len(fourcc) != 4:
        raise Fmp4Error(f"box type must be 4 bytes, got {fourcc!r}")
    size = BOX_HEADER_SIZE + sum(len(part) for part in payload)
    if size > _MAX_BOX_SIZE:
        raise Fmp4Error(f"box {fourcc!r} of {size} bytes needs a 64-bit size")
    return b"".join((struct.pack(">I4s", size, fourcc), *payload))


def full_box(fourcc: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with 8-bit version and 24-bit flags."""
    if not 0 <= version <= 0xFF or not 0 <= flags <= 0xFF_FFFF:
        raise Fmp4Error(f"full box {fourcc!r}: bad version {version} or flags {flags:#x}")
    return box(fourcc, struct.pack(">I", version << 24 | flags), *payload)


def descriptor(tag: int, *payload: bytes) -> bytes:
    """An MPEG-4 Systems (14496-1) descriptor with its expandable size field.

    The size is written in as few 7-bit groups as it needs, high bit set on all but the last.
    """
    size = sum(len(part) for part in payload)
    if size >= 1 << 28:
        raise Fmp4Error(f"descriptor tag {tag:#x} of {size} bytes is too large")
    groups = [size & 0x7F]
    size >>= 7
    while size:
        groups.append(0x80 | (size & 0x7F))
        size >>= 7
    return b"".join((bytes((tag, *reversed(groups))), *payload))


def language_code(iso639_2: str) -> int:
    """Pack a three-letter ISO 639-2/T code into mdhd's 15-bit field."""
    if len(iso639_2) != 3 or not iso639_2.isascii() or not iso639_2.islower():
        raise Fmp4Error(f"language must be three lowercase letters, got {iso639_2!r}")
    a, b, c = (ord(ch) - 0x60 for ch in iso639_2)
    return a << 10 | b << 5 | c
