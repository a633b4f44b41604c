"""A spooled segment's sidecar: everything storing it takes, back from JSON exactly, and a
clear error for one that cannot be read."""

from __future__ import annotations

import uuid

import pytest

from ingest.spool_record import SpoolRecordError, decode, encode
from media.hls.segment_packager import InitSegment, PackagedSegment
from media.types import AudioConfig, VideoCodec, VideoConfig
from tests.media import spool_record

VIDEO = VideoConfig(VideoCodec.HEVC, b"\x01\x02\x03\xff", 1280, 720, "hvc1.1.6.L93.B0")
AUDIO = AudioConfig(b"\x2b\x92\x08\x00", 5, 48000, 2, frame_samples=2048)


def test_a_record_comes_back_from_its_sidecar_unchanged() -> None:
    init = InitSegment(3, bytes(range(256)), VIDEO, AUDIO)
    segment = PackagedSegment(41, 9_000_000, 179_999, b"", init, True, False, 59)
    record = spool_record(segment, uuid.uuid4())
    assert decode(encode(record)) == record


def test_an_audio_only_record_comes_back_too() -> None:
    init = InitSegment(0, b"init", None, AUDIO)
    record = spool_record(PackagedSegment(0, 0, 90_000, b"", init, False), uuid.uuid4())
    assert decode(encode(record)) == record


@pytest.mark.parametrize(
    ("sidecar", "says"),
    [
        (b'{"format": 1, "seq', "unreadable sidecar: JSONDecodeError"),
        (b'{"format": 2}', "sidecar format 2, not 1"),
        (b"[1, 2]", "unreadable sidecar: AttributeError"),
        (b'{"format": 1, "sequence": 4}', "unreadable sidecar: KeyError"),
    ],
)
def test_a_sidecar_that_cannot_be_read_says_why(sidecar: bytes, says: str) -> None:
    with pytest.raises(SpoolRecordError, match=says):
        decode(sidecar)
