"""Arbitrary bytes may only ever raise RtmpError, and the receive buffer stays bounded."""

import os
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.rtmp import PublishRequested, RtmpError, ServerConnection, amf0
from tests.fixtures.rtmp.client_bytes import (
    FFMPEG_PUBLISH,
    HANDSHAKE_SIZE,
    chunk,
    command,
    message_chunks,
    plain_c0c1,
)

LIMITS = dict(
    max_chunk_size=1024,
    max_message_size=4096,
    max_chunk_streams=8,
    max_pending_bytes=8192,
    max_receive_buffer=4096,
)
# FFmpeg switches to 4096-byte chunks: the corrupted-recording fuzz must allow them.
RECORDING_LIMITS = dict(
    LIMITS,
    max_chunk_size=4096,
    max_message_size=65536,
    max_pending_bytes=65536,
    max_receive_buffer=16384,
)
HANDSHAKE = plain_c0c1() + b"\x00" * HANDSHAKE_SIZE
CONNECT = message_chunks(3, 20, command("connect", 1.0, {"app": "live"}))
PUBLISH = message_chunks(3, 20, command("createStream", 2.0)) + message_chunks(
    4, 20, command("publish", 3.0, None, "k", "live"), stream_id=1
)
RECORDED = FFMPEG_PUBLISH.read_bytes()
# RTMP_FUZZ_EXAMPLES=5000 for a long local run; the default keeps the file under ~20 s.
FUZZ = settings(
    max_examples=int(os.environ.get("RTMP_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def feed(prefix: bytes, pieces: list[bytes], limits: dict = LIMITS) -> None:
    """Feed the pieces, accepting any publish; only RtmpError may come out."""
    conn = ServerConnection(**limits)
    try:
        for piece in [prefix, *pieces]:
            events = conn.receive_data(piece)
            assert conn.buffered_bytes <= limits["max_receive_buffer"]
            if any(isinstance(event, PublishRequested) for event in events):
                conn.accept_publish()
                conn.receive_data(b"")
            conn.data_to_send()
    except RtmpError:
        assert conn.closed
        assert conn.buffered_bytes == 0
    conn.receive_eof()


pieces = st.lists(st.binary(min_size=0, max_size=600), max_size=12)


@FUZZ
@given(pieces)
@example([b"\x03" + b"\x00" * 4000])
def test_arbitrary_bytes_from_the_start_raise_only_rtmp_errors(data):
    feed(b"", data)


@FUZZ
@given(pieces)
@example([b"\x3f" + b"\xff" * 11])  # fmt 0, max timestamp field, huge length
@example([b"\x01"])  # three-byte basic header cut short
@example([b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00\x00\x00\x00\x00"])  # chunk size 0
@example([b"\x03\x00\x00\x00\x00\x00\x02\x14\x00\x00\x00\x00\x09\x00"])  # bare object end
def test_arbitrary_bytes_after_the_handshake_raise_only_rtmp_errors(data):
    feed(HANDSHAKE, data)


@FUZZ
@given(pieces)
def test_arbitrary_bytes_while_publishing_raise_only_rtmp_errors(data):
    feed(HANDSHAKE + CONNECT + PUBLISH, data)


amf_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "connect",
            "publish",
            "createStream",
            "FCUnpublish",
            "deleteStream",
            "@setDataFrame",
            "onMetaData",
            "play",
            "releaseStream",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def chunks(draw):
    fmt = draw(st.integers(0, 3))
    csid = draw(st.sampled_from([2, 3, 4, 6, 63, 64, 400]))
    type_id = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22, 0, 255]))
    if type_id in (20, 18):
        payload = amf0.encode_values(*draw(st.lists(amf_values, min_size=1, max_size=5)))
    elif type_id in (1, 2, 3, 5):
        payload = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
    else:
        payload = draw(st.binary(max_size=300))
    payload = payload[: draw(st.integers(0, len(payload)))]
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, 5000)))
    extended = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
    return chunk(
        fmt,
        csid,
        payload,
        timestamp=draw(st.integers(0, 0xFFFFFE)),
        length=length,
        type_id=type_id,
        stream_id=draw(st.integers(0, 2)),
        extended=extended,
    )


@FUZZ
@given(st.lists(chunks(), max_size=20))
def test_random_well_formed_looking_chunks_raise_only_rtmp_errors(chunk_list):
    feed(HANDSHAKE + CONNECT, chunk_list)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(RECORDED) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.integers(1, 5000),
)
def test_a_real_ffmpeg_publish_with_corrupted_bytes_raises_only_rtmp_errors(flips, piece):
    corrupted = bytearray(RECORDED)
    for position, value in flips:
        corrupted[position] = value
    feed(
        b"",
        [bytes(corrupted[i : i + piece]) for i in range(0, len(corrupted), piece)],
        RECORDING_LIMITS,
    )
