"""Replays bytes recorded from a real ``ffmpeg -f flv rtmp://...`` publish.

The fixture was captured by tests/fixtures/rtmp/capture_ffmpeg_publish.py: 2 s of 320x240
testsrc as H.264 with B-frames plus AAC, publishing to live/somekey, with the digest
handshake and the chunk size 4096 FFmpeg negotiates.
"""

import random
from collections.abc import Iterable

import pytest

from ingest.rtmp import (
    AudioMessage,
    PublishEnded,
    PublishRequested,
    ServerConnection,
    StreamMetadata,
    VideoMessage,
)
from tests.fixtures.rtmp.client_bytes import FFMPEG_PUBLISH, ServerOutput

RECORDED = FFMPEG_PUBLISH.read_bytes()


def whole() -> Iterable[bytes]:
    yield RECORDED


def one_byte_pieces() -> Iterable[bytes]:
    for index in range(len(RECORDED)):
        yield RECORDED[index : index + 1]


def random_pieces(seed: int) -> Iterable[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(RECORDED):
        size = rng.choice((1, 2, 3, 7, 11, 100, 1000, 1500, 4096, 5000, 65536))
        yield RECORDED[pos : pos + size]
        pos += size


def replay(pieces: Iterable[bytes]) -> tuple[list, ServerOutput, ServerConnection]:
    conn = ServerConnection()
    output = ServerOutput()
    events = []
    for piece in pieces:
        new = conn.receive_data(piece)
        events += new
        if any(isinstance(event, PublishRequested) for event in new):
            conn.accept_publish()
            events += conn.receive_data(b"")
        output.feed(conn.data_to_send())
    return events, output, conn


SPLITS = {
    "whole": whole,
    "one byte at a time": one_byte_pieces,
    "random pieces 1": lambda: random_pieces(1),
    "random pieces 2": lambda: random_pieces(2),
    "random pieces 3": lambda: random_pieces(3),
}


@pytest.fixture(scope="module", params=list(SPLITS), ids=list(SPLITS))
def replayed(request):
    return replay(SPLITS[request.param]())


def test_the_publish_names_the_app_and_the_key_exactly(replayed):
    events, _, conn = replayed
    assert isinstance(events[0], PublishRequested)
    assert events[0].app == "live"
    assert events[0].stream_name == "somekey"
    assert events[0].publish_type == "live"
    assert conn.tc_url.startswith("rtmp://127.0.0.1:") and conn.tc_url.endswith("/live")
    assert conn.handshake_used_digest  # FFmpeg sends the Flash Player 9 digest form


def test_metadata_carries_the_picture_size(replayed):
    events, _, _ = replayed
    (metadata,) = [e for e in events if isinstance(e, StreamMetadata)]
    assert metadata.values["width"] == 320 and metadata.values["height"] == 240
    assert metadata.values["videocodecid"] == 7 and metadata.values["audiocodecid"] == 10


def test_the_first_media_messages_are_the_avc_and_aac_sequence_headers(replayed):
    events, _, _ = replayed
    video = [e for e in events if isinstance(e, VideoMessage)]
    audio = [e for e in events if isinstance(e, AudioMessage)]
    assert video[0].payload[:2] == b"\x17\x00"
    assert audio[0].payload[:2] == b"\xaf\x00"
    assert all(v.payload[1] == 1 for v in video[1:-1])  # then AVC NAL units...
    assert video[-1].payload[:2] == b"\x17\x02"  # ...and FFmpeg's end of sequence
    assert all(a.payload[1] == 1 for a in audio[1:])  # raw AAC frames
    composition_offsets = {int.from_bytes(v.payload[2:5], "big") for v in video[1:-1]}
    assert len(composition_offsets) > 1  # B-frames: presentation differs from decode order


def test_every_media_message_arrives_with_monotonic_timestamps(replayed):
    events, _, _ = replayed
    for kind, count in ((VideoMessage, 52), (AudioMessage, 89)):
        stamps = [e.timestamp_ms for e in events if isinstance(e, kind)]
        assert len(stamps) == count
        assert stamps == sorted(stamps)
        assert 1900 <= stamps[-1] <= 2200
    assert isinstance(events[-1], PublishEnded)
    assert sum(isinstance(e, PublishEnded) for e in events) == 1


def test_what_we_sent_back_parses_as_valid_rtmp(replayed):
    _, output, conn = replayed
    assert output.skip == 0 and len(output.reader.buffer) == 0
    assert [m.type_id for m in output.messages[:3]] == [5, 6, 1]
    assert output.reader.chunk_size == 4096
    commands = output.commands()
    names = [(values[0], values[1]) for _, values in commands]
    assert names[:4] == [("_result", 1.0), ("_result", 2.0), ("_result", 3.0), ("_result", 4.0)]
    assert commands[0][1][3]["code"] == "NetConnection.Connect.Success"
    assert commands[3][1][3] == 1.0  # createStream's stream id
    ((stream_id, status),) = [c for c in commands if c[1][0] == "onStatus"]
    assert (stream_id, status[0], status[3]["code"]) == (1, "onStatus", "NetStream.Publish.Start")
    assert not conn.closed and conn.buffered_bytes == 0
