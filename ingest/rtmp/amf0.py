"""AMF0 encoding and decoding (Adobe AMF0 specification), as used by RTMP commands and data.

Mapping: number <-> float (ints encode as numbers), boolean <-> bool, string / long string
<-> str, null <-> None, undefined <-> ``UNDEFINED``, object <-> dict, ECMA array <->
``EcmaArray`` (a dict subclass), strict array <-> list, date <-> ``AmfDate``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ingest.rtmp.errors import AmfError

DEFAULT_MAX_DEPTH = 32

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class AmfUndefined:
    """The AMF0 ``undefined`` value, distinct from ``null`` (None)."""

    _instance: AmfUndefined | None = None

    def __new__(cls) -> AmfUndefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = AmfUndefined()


class EcmaArray(dict):
    """A dict that encodes as an AMF0 ECMA array (what ``onMetaData`` usually carries)."""


@dataclass(frozen=True, slots=True)
class AmfDate:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and the reserved time zone."""

    milliseconds: float
    timezone: int = 0


def decode_values(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[Any]:
    """Decode every AMF0 value in ``data``, in order."""
    decoder = _Decoder(data, max_depth)
    values = []
    while decoder.pos < len(data):
        values.append(decoder.value(0))
    return values


def decode_value(
    data: bytes, offset: int = 0, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Any, int]:
    """Decode one AMF0 value at ``offset``; return it and the offset just after it."""
    decoder = _Decoder(data, max_depth)
    decoder.pos = offset
    value = decoder.value(0)
    return value, decoder.pos


class _Decoder:
    __slots__ = ("data", "pos", "max_depth")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.max_depth = max_depth

    def _need(self, count: int, what: str) -> int:
        start = self.pos
        if start + count > len(self.data):
            raise AmfError(
                f"truncated {what}",
                value=len(self.data) - start,
                expected=f"{count} bytes at offset {start}",
            )
        self.pos = start + count
        return start

    def _text(self, length: int, what: str) -> str:
        start = self._need(length, what)
        try:
            return self.data[start : start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError(
                f"{what} is not UTF-8",
                value=self.data[start : start + length][:32],
                expected="UTF-8 text",
            ) from exc

    def _short_string(self, what: str) -> str:
        (length,) = _U16.unpack_from(self.data, self._need(2, what + " length"))
        return self._text(length, what)

    def value(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise AmfError(
                "AMF0 nesting too deep", value=depth, expected=f"at most {self.max_depth} levels"
            )
        marker = self.data[self._need(1, "type marker")]
        if marker == STRING:
            return self._short_string("string")
        if marker == NUMBER:
            return _DOUBLE.unpack_from(self.data, self._need(8, "number"))[0]
        if marker == BOOLEAN:
            return self.data[self._need(1, "boolean")] != 0
        if marker == OBJECT:
            return self._properties({}, depth, tolerate_missing_end=False)
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == ECMA_ARRAY:
            self._need(4, "ECMA array count")  # advisory only; encoders get it wrong
            return self._properties(EcmaArray(), depth, tolerate_missing_end=True)
        if marker == STRICT_ARRAY:
            (count,) = _U32.unpack_from(self.data, self._need(4, "strict array count"))
            if count > len(self.data) - self.pos:  # every element is at least one byte
                raise AmfError(
                    "strict array count exceeds the data",
                    value=count,
                    expected=f"at most {len(self.data) - self.pos}",
                )
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            milliseconds, timezone = _DATE.unpack_from(self.data, self._need(10, "date"))
            return AmfDate(milliseconds, timezone)
        if marker == LONG_STRING:
            (length,) = _U32.unpack_from(self.data, self._need(4, "long string length"))
            return self._text(length, "long string")
        if marker == OBJECT_END:
            raise AmfError(
                "object end marker outside an object", value=marker, expected="a value marker"
            )
        raise AmfError(
            "unsupported AMF0 type marker",
            value=marker,
            expected="one of 0x00-0x03, 0x05, 0x06, 0x08, 0x0A-0x0C",
        )

    def _properties(self, into: dict, depth: int, *, tolerate_missing_end: bool) -> dict:
        data = self.data
        while True:
            if tolerate_missing_end and self.pos == len(data):
                return into
            key = self._short_string("property name")
            if not key and self.pos < len(data) and data[self.pos] == OBJECT_END:
                self.pos += 1
                return into
            into[key] = self.value(depth + 1)


def encode_values(*values: Any) -> bytes:
    """Encode each value in turn as AMF0 and concatenate them."""
    out = bytearray()
    for value in values:
        _encode(out, value, 0)
    return bytes(out)


def _encode_key(out: bytearray, key: Any) -> None:
    if not isinstance(key, str):
        raise AmfError("AMF0 property names must be str", value=key, expected="str")
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise AmfError("AMF0 property name too long", value=len(raw), expected="<= 65535 bytes")
    out += _U16.pack(len(raw))
    out += raw


def _encode(out: bytearray, value: Any, depth: int) -> None:
    if depth > DEFAULT_MAX_DEPTH:
        raise AmfError(
            "value nested too deep to encode",
            value=depth,
            expected=f"at most {DEFAULT_MAX_DEPTH} levels",
        )
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError as exc:
            raise AmfError(
                "integer too large for an AMF0 number",
                value=value,
                expected="a value that fits a double",
            ) from exc
        out.append(NUMBER)
        out += _DOUBLE.pack(number)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, dict):
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            _encode_key(out, key)
            _encode(out, item, depth + 1)
        out += b"\x00\x00\x09"
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(out, item, depth + 1)
    elif isinstance(value, AmfDate):
        if not -0x8000 <= value.timezone <= 0x7FFF:
            raise AmfError(
                "AMF0 date time zone out of range",
                value=value.timezone,
                expected="a signed 16-bit integer",
            )
        out.append(DATE)
        out += _DATE.pack(value.milliseconds, value.timezone)
    else:
        raise AmfError(
            "type has no AMF0 encoding",
            value=type(value).__name__,
            expected="None, bool, int, float, str, dict, list, AmfDate or UNDEFINED",
        )
