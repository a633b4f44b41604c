import hashlib
import hmac

import pytest

from ingest.rtmp import HandshakeError, ServerConnection
from tests.fixtures.rtmp.client_bytes import (
    HANDSHAKE_SIZE,
    command,
    digest_c0c1,
    message_chunks,
    plain_c0c1,
)

SERVER_KEY_TEXT = b"Genuine Adobe Flash Media Server 001"
KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")


def _digest_at(packet: bytes, base: int) -> tuple[int, bytes]:
    offset = sum(packet[base : base + 4]) % 728 + base + 4
    mac = hmac.new(SERVER_KEY_TEXT, packet[:offset] + packet[offset + 32 :], hashlib.sha256)
    return offset, mac.digest()


def test_plain_handshake_echoes_c1_as_s2_and_then_waits_for_c2():
    conn = ServerConnection()
    c0c1 = plain_c0c1()
    assert conn.receive_data(c0c1) == []
    reply = conn.data_to_send()
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE
    assert reply[0] == 3
    assert reply[1 + HANDSHAKE_SIZE :] == c0c1[1:]
    conn.receive_data(b"\x00" * (HANDSHAKE_SIZE - 1))
    assert conn.buffered_bytes == HANDSHAKE_SIZE - 1
    conn.receive_data(b"\x00")
    assert conn.buffered_bytes == 0
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("scheme_base", [8, 772])
def test_digest_handshake_answers_with_a_valid_s1_digest_and_keyed_s2(scheme_base):
    conn = ServerConnection()
    c0c1, client_digest = digest_c0c1(scheme_base)
    conn.receive_data(c0c1)
    reply = conn.data_to_send()
    s1 = reply[1 : 1 + HANDSHAKE_SIZE]
    s2 = reply[1 + HANDSHAKE_SIZE :]
    assert s1[4:8] != b"\x00\x00\x00\x00"
    offset, expected = _digest_at(s1, scheme_base)
    assert s1[offset : offset + 32] == expected
    s2_key = hmac.new(SERVER_KEY_TEXT + KEY_TAIL, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(s2_key, s2[:-32], hashlib.sha256).digest()


def test_c1_with_a_version_but_no_valid_digest_falls_back_to_the_plain_echo():
    c0c1 = bytearray(plain_c0c1())
    c0c1[5:9] = bytes((9, 0, 124, 2))
    conn = ServerConnection()
    conn.receive_data(bytes(c0c1))
    assert conn.data_to_send()[1 + HANDSHAKE_SIZE :] == bytes(c0c1[1:])


@pytest.mark.parametrize("version", [0, 6, 0x47])
def test_a_c0_version_other_than_3_is_refused(version):
    conn = ServerConnection()
    with pytest.raises(HandshakeError) as info:
        conn.receive_data(bytes([version]))
    assert info.value.value == version
    assert info.value.expected == 3
    assert conn.closed


def test_handshake_and_the_first_chunks_may_arrive_in_one_read():
    conn = ServerConnection()
    connect = message_chunks(3, 20, command("connect", 1.0, {"app": "live"}))
    conn.receive_data(plain_c0c1() + b"\x00" * HANDSHAKE_SIZE + connect)
    assert conn.app == "live"
