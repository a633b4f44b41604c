"""Wrapping container timestamps onto one monotonic integer timeline.

MPEG-TS carries 33-bit 90 kHz timestamps (they wrap every 26.5 hours), FLV and RTMP 32-bit
milliseconds (every 49.7 days); both demuxers unwrap with `TimestampUnwrapper`.
"""

from __future__ import annotations


class TimestampUnwrapper:
    """Wrapping timestamps to one monotonic integer timeline: each value is placed nearest
    the previous one (within half the modulus), so a wrap adds the modulus instead of
    jumping back.

    A jump of more than `max_jump` either way is an encoder restarting its clock (or a
    spliced feed): the timeline continues `restart_gap` after where it was instead, so the
    packager never sees time run backwards or leap ahead. Smaller steps back are kept as
    they are (B-frame presentation times, loosely interleaved tracks); the segmenter decides
    about those. All values are in the container's own unit.
    """

    __slots__ = ("_last", "_last_raw", "jumps", "max_jump", "modulus", "restart_gap")

    def __init__(self, modulus: int, *, max_jump: int, restart_gap: int) -> None:
        if not 0 < max_jump < modulus // 2:
            raise ValueError(f"max_jump must be in 1..{modulus // 2 - 1}, got {max_jump}")
        self.modulus = modulus
        self.max_jump = max_jump
        self.restart_gap = restart_gap
        self._last_raw: int | None = None
        self._last = 0
        self.jumps = 0

    def unwrap(self, raw: int) -> int:
        if self._last_raw is None:
            self._last_raw = self._last = raw
            return raw
        delta = (raw - self._last_raw) % self.modulus
        if delta >= self.modulus // 2:
            delta -= self.modulus
        if abs(delta) > self.max_jump:
            self.jumps += 1
            delta = self.restart_gap
        self._last_raw = raw
        self._last += delta
        return self._last
