import math
import struct

import pytest

from ingest.rtmp import amf0
from ingest.rtmp.amf0 import UNDEFINED, AmfDate, EcmaArray
from ingest.rtmp.errors import AmfError, RtmpError


def test_every_supported_type_round_trips():
    values = [
        1.5,
        -0.0,
        True,
        False,
        "héllo",
        None,
        UNDEFINED,
        {"a": 1.0, "nested": {"b": [1.0, "x", None]}},
        EcmaArray(width=320.0, height=240.0),
        [1.0, 2.0, [3.0]],
        AmfDate(1_700_000_000_000.0, 0),
        "x" * 70_000,  # long string
    ]
    decoded = amf0.decode_values(amf0.encode_values(*values))
    assert decoded == values
    assert isinstance(decoded[8], EcmaArray)


def test_integers_encode_as_numbers_and_long_strings_get_the_long_marker():
    assert amf0.encode_values(3) == b"\x00" + struct.pack(">d", 3.0)
    assert amf0.encode_values("x" * 70_000)[0] == 0x0C
    assert amf0.encode_values("x" * 0xFFFF)[0] == 0x02


def test_known_bytes_decode_to_the_expected_values():
    data = (
        b"\x02\x00\x07connect"
        + b"\x00"
        + struct.pack(">d", 1.0)
        + b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09"
    )
    assert amf0.decode_values(data) == ["connect", 1.0, {"app": "live"}]


def test_ecma_array_without_its_end_marker_is_tolerated_at_the_end_of_data():
    data = b"\x08\x00\x00\x00\x01\x00\x01w" + b"\x00" + struct.pack(">d", 1.0)
    assert amf0.decode_values(data) == [{"w": 1.0}]


def test_nan_dates_decode():
    (date,) = amf0.decode_values(b"\x0b" + struct.pack(">dh", math.nan, 0))
    assert math.isnan(date.milliseconds)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01",  # truncated number
        b"\x02\x00\x05ab",  # truncated string
        b"\x02\x00\x02\xff\xfe",  # not UTF-8
        b"\x03\x00\x01a",  # object cut inside a property
        b"\x09",  # object end on its own
        b"\x0a\xff\xff\xff\xff",  # strict array count beyond the data
        b"\x11\x00",  # AMF3 switch: unsupported
        b"\x07\x00\x01",  # reference: unsupported
        b"\x0c\x00\x00\x00\x09abc",  # truncated long string
    ],
)
def test_malformed_bytes_raise_amf_error_only(data):
    with pytest.raises(AmfError) as info:
        amf0.decode_values(data)
    assert isinstance(info.value, RtmpError)
    assert info.value.expected is not None


def test_nesting_beyond_the_depth_limit_is_refused():
    deep = b"\x0a\x00\x00\x00\x01" * 40 + b"\x05"
    with pytest.raises(AmfError, match="nesting"):
        amf0.decode_values(deep, max_depth=32)
    assert amf0.decode_values(deep, max_depth=64)


def test_unencodable_values_raise_amf_error():
    with pytest.raises(AmfError):
        amf0.encode_values(object())
    with pytest.raises(AmfError):
        amf0.encode_values({1: "not a str key"})
    with pytest.raises(AmfError):
        amf0.encode_values(10**400)
