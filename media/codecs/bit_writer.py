"""MSB-first bit writer with Exp-Golomb codes: the writing side of `media.codecs.h264.BitReader`.

Used to code the few bitstreams we generate ourselves (the slate's H.264 parameter sets and
slices, its AAC frames). Bits accumulate in one Python integer, so writing a long run of
bits at once (`bits(value, count)` with a large `count`) costs one shift, not a loop.
"""

from __future__ import annotations


class BitWriter:
    """Append fields most significant bit first; `to_bytes` pads the last byte with zeros."""

    __slots__ = ("_size", "_value")

    def __init__(self) -> None:
        self._value = 0
        self._size = 0

    @property
    def bit_count(self) -> int:
        return self._size

    def bits(self, value: int, count: int) -> None:
        """Write `value` as an unsigned field of exactly `count` bits."""
        if count < 0 or not 0 <= value < 1 << count:
            raise ValueError(f"value {value} does not fit an unsigned field of {count} bits")
        self._value = self._value << count | value
        self._size += count

    def flag(self, value: bool) -> None:
        self.bits(int(value), 1)

    def ue(self, value: int) -> None:
        """Unsigned Exp-Golomb code ue(v) (H.264 9.1): value + 1 after as many zeros as it has
        bits after its leading one."""
        if value < 0:
            raise ValueError(f"ue(v) codes values >= 0, got {value}")
        code = value + 1
        self.bits(code, 2 * code.bit_length() - 1)

    def se(self, value: int) -> None:
        """Signed Exp-Golomb code se(v) (H.264 9.1.1): 1, -1, 2, -2 ... map to 1, 2, 3, 4 ..."""
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp_trailing_bits(self) -> None:
        """The stop bit and zero bits up to the next byte boundary (H.264 7.3.2.11)."""
        self.bits(1, 1)
        self.bits(0, -self._size % 8)

    def to_bytes(self) -> bytes:
        """The bits written so far, zero-padded to a whole number of bytes."""
        padding = -self._size % 8
        return (self._value << padding).to_bytes((self._size + padding) // 8, "big")
