"""Where to cut a stream into HLS segments and LL-HLS parts.

Cut decisions only: access units go in, `SegmentClosed` / `PartClosed` events come out. No
I/O, no clocks, no media bytes are inspected; the fMP4 writer turns the events into boxes.

Rules (with video):

* The first segment starts at the first video keyframe; everything before it (video and
  audio) is dropped and counted in `Segmenter.dropped_before_keyframe`. So is audio that
  arrives after that keyframe but is stamped before it (RTMP encoders interleave loosely):
  it would start the audio before the timeline does. Later segments keep such audio, which
  continues the previous segment's.
* A segment closes at the first video keyframe whose dts reaches ``start + target``, within
  a tolerance of half a video frame (see `Segmenter`), and that keyframe opens the next
  segment. Its duration is ``keyframe.dts - start``, so durations tile the timeline exactly.
  A keyframe whose pts reaches the target counts too: an open-GOP HEVC encoder (x265's
  default) decodes its first IDR with less delay than the CRAs after it, so the first GOP
  is a frame shorter in dts than in pts, and would otherwise double the first segment.
* Keyframes come from the encoder: a GOP longer than the target gives segments as long as
  the GOP. The observed keyframe interval is reported by `Segmenter.gop` so the caller can
  store it and warn the streamer.
* A segment never grows past ``max_duration_ticks`` (the presentation's target duration
  allows no longer EXTINF, see `media.hls.target_duration`) if a keyframe inside it allows a
  cut: once the open segment would pass it, it closes at the last keyframe it holds after
  its first, and that keyframe opens the next one. An encoder whose keyframes are further
  apart than the limit leaves no such keyframe; its segments run as long as the GOP.
* Audio never triggers a cut; it joins the open segment in arrival order.
* Video decode times must increase (a repeated or earlier one is refused with
  `SegmenterError`), so every frame lasts at least one tick.
* The open segment is bounded (``max_open_ticks``, ``max_open_bytes``): a publisher that
  sends no keyframe (or only further apart than the bound) would otherwise grow it without
  end. A unit that would take it past either bound raises `SegmentOverflowError`, and the
  open segment is discarded: it could never be listed (its EXTINF would be far above any
  target duration), and its memory is freed at once. The next segment waits for a keyframe.

Without video (``has_video=False``) audio is the leading track: the first audio unit opens
the first segment and a segment closes at the first audio unit reaching the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.types import CLOCK_HZ, AccessUnit, TrackKind

__all__ = [
    "GopStats",
    "PartClosed",
    "SegmentClosed",
    "SegmentOverflowError",
    "Segmenter",
    "SegmenterError",
    "SegmenterEvent",
]


class SegmenterError(ValueError):
    """Input the segmenter cannot place (a timestamp going backwards, a bad end time)."""


class SegmentOverflowError(SegmenterError):
    """The open segment would pass its duration or size bound (no keyframe came to cut it)."""


@dataclass(frozen=True, slots=True)
class GopStats:
    """Observed distance between consecutive video keyframes, in 90 kHz ticks."""

    last_ticks: int
    max_ticks: int

    @property
    def last_seconds(self) -> float:
        return self.last_ticks / CLOCK_HZ

    @property
    def max_seconds(self) -> float:
        return self.max_ticks / CLOCK_HZ


@dataclass(frozen=True, slots=True)
class PartClosed:
    """An LL-HLS partial segment; always emitted before the `SegmentClosed` that holds it."""

    segment_sequence: int
    part_index: int
    start_dts: int
    duration_ticks: int
    access_units: tuple[AccessUnit, ...]
    independent: bool  # starts with a keyframe (always true for audio-only streams)

    @property
    def duration_seconds(self) -> float:
        return self.duration_ticks / CLOCK_HZ


@dataclass(frozen=True, slots=True)
class SegmentClosed:
    """A finished segment: its access units in arrival order and its place on the timeline."""

    sequence: int
    start_dts: int
    duration_ticks: int
    access_units: tuple[AccessUnit, ...]
    keyframe_count: int  # video keyframes inside; 0 for audio-only streams
    discontinuity: bool = False  # first segment after `Segmenter.mark_discontinuity()`
    part_count: int = 0  # parts emitted for this segment; 0 when parts are off

    @property
    def duration_seconds(self) -> float:
        return self.duration_ticks / CLOCK_HZ

    @property
    def end_dts(self) -> int:
        return self.start_dts + self.duration_ticks


SegmenterEvent = SegmentClosed | PartClosed


class Segmenter:
    """Keyframe-aligned segmenter, optionally emitting LL-HLS parts.

    Cut tolerance: a cut (segment or part) happens at the first leading-track unit whose
    dts is at least ``target - tolerance`` after the start, where the tolerance is half the
    last observed frame interval of the leading track, capped at a quarter of the target.
    Half a frame absorbs timestamp rounding and jitter (FLV carries whole milliseconds, so
    30 fps arrives as 0, 33, 67, 100, ... and a 1/3 s part boundary lands on 333 ms, one
    tick short of 30 000) without ever pulling a cut a whole frame early. Exact cadences
    (30 fps at 2 s: frame 60 at 2000 ms; 29.97 fps: frame 60 at 2.002 s) cut every 60
    frames either way.

    Timeline restarts: `flush()` closes the open segment and forgets the timeline (the next
    segment again waits for a keyframe); sequence numbers always continue. A publisher who
    reconnects into the same session goes through `mark_discontinuity()`, which does the same
    and flags the next segment, so the new publisher's timestamps may restart anywhere. A
    fresh `Segmenter(first_sequence=n)` followed by `mark_discontinuity()` does the same
    across processes.

    Parts (``part_target_ticks`` set): a part closes at the first leading-track unit at or
    after ``part start + part target`` (same tolerance) or when its segment closes, so a
    part can exceed the part target by less than one frame; choose a part target that is a
    whole number of frames, or advertise PART-TARGET rounded up.
    """

    __slots__ = (
        "_aus",
        "_gop_last",
        "_gop_max",
        "_has_video",
        "_inner_keyframe",
        "_last_keyframe_dts",
        "_last_lead_dts",
        "_lead",
        "_lead_delta",
        "_max_duration",
        "_max_open_bytes",
        "_max_open_ticks",
        "_next_sequence",
        "_open",
        "_open_bytes",
        "_part_cap",
        "_part_independent",
        "_part_index",
        "_part_start_dts",
        "_part_start_idx",
        "_part_target",
        "_parts",
        "_pending_discontinuity",
        "_seg_keyframes",
        "_seg_start",
        "_seg_start_pts",
        "_target",
        "_target_cap",
        "_timeline_start",
        "dropped_before_keyframe",
    )

    def __init__(
        self,
        target_ticks: int,
        *,
        has_video: bool,
        part_target_ticks: int | None = None,
        first_sequence: int = 0,
        max_duration_ticks: int | None = None,
        max_open_ticks: int | None = None,
        max_open_bytes: int | None = None,
    ) -> None:
        if target_ticks <= 0:
            raise ValueError(f"target_ticks must be positive, got {target_ticks}")
        if part_target_ticks is not None and not 0 < part_target_ticks <= target_ticks:
            raise ValueError(
                f"part_target_ticks must be in 1..{target_ticks} (the segment target),"
                f" got {part_target_ticks}"
            )
        if first_sequence < 0:
            raise ValueError(f"first_sequence must be >= 0, got {first_sequence}")
        if max_duration_ticks is not None and part_target_ticks is not None:
            raise ValueError(
                "max_duration_ticks cannot be combined with parts: a part already published"
                " cannot move into the next segment"
            )
        if max_open_ticks is not None and max_open_ticks < target_ticks:
            raise ValueError(
                f"max_open_ticks must be at least the target {target_ticks}, got {max_open_ticks}"
            )
        if max_open_bytes is not None and max_open_bytes <= 0:
            raise ValueError(f"max_open_bytes must be positive, got {max_open_bytes}")
        self._target = target_ticks
        self._max_open_ticks = max_open_ticks
        self._max_open_bytes = max_open_bytes
        self._open_bytes = 0
        self._max_duration: int | None = None
        self.max_duration_ticks = max_duration_ticks
        self._target_cap = target_ticks // 4
        self._parts = part_target_ticks is not None
        self._part_target = part_target_ticks or 0
        self._part_cap = self._part_target // 4
        self._has_video = has_video
        self._lead = TrackKind.VIDEO if has_video else TrackKind.AUDIO
        self._next_sequence = first_sequence
        self._open = False
        self._aus: list[AccessUnit] = []
        self._seg_start = 0
        self._seg_start_pts = 0
        self._seg_keyframes = 0
        self._part_start_dts = 0
        self._part_start_idx = 0
        self._part_index = 0
        self._part_independent = False
        self._last_lead_dts = 0
        self._lead_delta = 0  # last nonzero frame interval of the leading track
        self._last_keyframe_dts: int | None = None
        self._gop_last = 0
        self._gop_max = 0
        self._pending_discontinuity = False
        self._timeline_start: int | None = None  # dts of the timeline's first segment
        self._inner_keyframe: tuple[int, int, int] | None = None  # index in _aus, dts, pts
        self.dropped_before_keyframe = 0

    @property
    def max_duration_ticks(self) -> int | None:
        """The longest segment a keyframe inside it allows cutting to; None: no limit."""
        return self._max_duration

    @max_duration_ticks.setter
    def max_duration_ticks(self, ticks: int | None) -> None:
        if ticks is not None and ticks < self._target:
            raise ValueError(
                f"max_duration_ticks must be at least the target {self._target}, got {ticks}"
            )
        self._max_duration = ticks

    @property
    def next_sequence(self) -> int:
        """Sequence number the next closed segment will carry."""
        return self._next_sequence

    @property
    def gop(self) -> GopStats | None:
        """Keyframe interval seen so far (last and max), or None before two keyframes."""
        if self._gop_max == 0:
            return None
        return GopStats(self._gop_last, self._gop_max)

    def push(self, au: AccessUnit) -> list[SegmenterEvent]:
        """Add one access unit; returns the parts and segment it closed, usually nothing."""
        if au.kind is not self._lead:
            if self._open and au.dts >= self._timeline_start:
                self._append(au)
            else:
                self.dropped_before_keyframe += 1
            return []

        dts = au.dts
        if not self._open:
            if self._has_video and not au.keyframe:
                self.dropped_before_keyframe += 1
                return []
            if self._has_video:
                self._note_keyframe(dts)
            self._open_segment(au)
            return []

        delta = dts - self._last_lead_dts
        if delta < 0:
            raise SegmenterError(
                f"{self._lead.value} dts went backwards from {self._last_lead_dts} to {dts};"
                " call flush() or mark_discontinuity() before restarting timestamps"
            )
        if delta == 0 and self._has_video:
            raise SegmenterError(
                f"video dts {dts} repeated; each frame needs a later decode time than the last"
            )
        if delta:
            self._lead_delta = delta
        self._last_lead_dts = dts
        # The open segment would pass the limit: end it at the keyframe inside it first.
        events = self._split_if_longer(dts)

        if au.keyframe and self._has_video:
            self._note_keyframe(dts)
            tolerance = min(self._lead_delta >> 1, self._target_cap)
            elapsed = max(dts - self._seg_start, au.pts - self._seg_start_pts)
            if dts > self._seg_start and elapsed >= self._target - tolerance:
                events += self._close_segment(dts)
                self._open_segment(au)
                return events
            self._seg_keyframes += 1
            if dts > self._seg_start:
                self._inner_keyframe = (len(self._aus), dts, au.pts)
        elif not self._has_video:
            tolerance = min(self._lead_delta >> 1, self._target_cap)
            if dts - self._seg_start >= self._target - tolerance:
                events = self._close_segment(dts)
                self._open_segment(au)
                return events

        if self._parts:
            tolerance = min(self._lead_delta >> 1, self._part_cap)
            if dts - self._part_start_dts >= self._part_target - tolerance:
                part = self._close_part(dts)
                self._part_index += 1
                self._part_start_dts = dts
                self._part_start_idx = len(self._aus)
                self._part_independent = au.keyframe or not self._has_video
                self._append(au)
                return [part]
        self._append(au)
        return events

    def flush(self, end_dts: int | None = None) -> list[SegmenterEvent]:
        """Close the open segment at end of stream and forget the timeline.

        The segment ends at `end_dts` when given (it must not precede the last leading unit),
        else at the last leading unit's dts plus its frame interval. Sequence numbers
        continue if more units are pushed afterwards; the next segment waits for a keyframe.
        """
        if not self._open:
            self._forget_timeline()
            return []
        if end_dts is None:
            end = self._last_lead_dts + self._lead_delta
        elif end_dts < self._last_lead_dts:
            raise SegmenterError(
                f"end_dts {end_dts} is before the last {self._lead.value} dts"
                f" {self._last_lead_dts} of the open segment"
            )
        else:
            end = end_dts
        events = self._split_if_longer(end)
        events += self._close_segment(end)
        self._forget_timeline()
        return events

    def mark_discontinuity(self, end_dts: int | None = None) -> list[SegmenterEvent]:
        """Start a new timeline (publisher reconnect): flush, then flag the next segment.

        Returns what `flush(end_dts)` closed. Timestamps after this call may restart at any
        value; sequence numbers continue.
        """
        events = self.flush(end_dts)
        self._pending_discontinuity = True
        return events

    # internals

    def _append(self, au: AccessUnit) -> None:
        """Add a unit to the open segment, within its bounds (see the module doc)."""
        held = au.dts - self._seg_start
        size = self._open_bytes + len(au.data)
        limit = self._max_open_ticks
        if limit is not None and held > limit:
            what = f"{held / CLOCK_HZ:.2f} s, over the limit of {limit / CLOCK_HZ:.1f} s"
        elif self._max_open_bytes is not None and size > self._max_open_bytes:
            what = f"{size} bytes, over the limit of {self._max_open_bytes} bytes"
        else:
            self._aus.append(au)
            self._open_bytes = size
            return
        units = len(self._aus)
        self._forget_timeline()
        raise SegmentOverflowError(
            f"no keyframe to cut at: the open segment would hold {what} "
            f"(since dts {self._seg_start}); its {units} units are discarded"
        )

    def _note_keyframe(self, dts: int) -> None:
        last = self._last_keyframe_dts
        if last is not None and dts > last:
            interval = dts - last
            self._gop_last = interval
            self._gop_max = max(self._gop_max, interval)
        self._last_keyframe_dts = dts

    def _open_segment(self, au: AccessUnit) -> None:
        dts = au.dts
        if self._timeline_start is None:
            self._timeline_start = dts
        self._open = True
        self._aus = [au]
        self._open_bytes = len(au.data)
        self._seg_start = dts
        self._seg_start_pts = au.pts
        self._seg_keyframes = 1 if self._has_video else 0
        self._inner_keyframe = None
        self._last_lead_dts = dts
        self._part_start_dts = dts
        self._part_start_idx = 0
        self._part_index = 0
        self._part_independent = True

    def _close_part(self, end_dts: int) -> PartClosed:
        return PartClosed(
            segment_sequence=self._next_sequence,
            part_index=self._part_index,
            start_dts=self._part_start_dts,
            duration_ticks=end_dts - self._part_start_dts,
            access_units=tuple(self._aus[self._part_start_idx :]),
            independent=self._part_independent,
        )

    def _split_if_longer(self, end_dts: int) -> list[SegmenterEvent]:
        """Close the open segment at its last inner keyframe if ending at `end_dts` (or
        later) would make it longer than the limit; the keyframe opens the next segment."""
        inner = self._inner_keyframe
        if inner is None or self._max_duration is None:
            return []
        if end_dts - self._seg_start <= self._max_duration:
            return []
        index, start, start_pts = inner
        head, self._aus = self._aus[:index], self._aus[index:]
        self._open_bytes = sum(len(unit.data) for unit in self._aus)
        closed = SegmentClosed(
            sequence=self._next_sequence,
            start_dts=self._seg_start,
            duration_ticks=start - self._seg_start,
            access_units=tuple(head),
            keyframe_count=self._seg_keyframes - 1,
            discontinuity=self._pending_discontinuity,
        )
        self._pending_discontinuity = False
        self._next_sequence += 1
        self._seg_start, self._seg_start_pts = start, start_pts
        self._seg_keyframes = 1
        self._inner_keyframe = None
        return [closed]

    def _close_segment(self, end_dts: int) -> list[SegmenterEvent]:
        events: list[SegmenterEvent] = []
        part_count = 0
        if self._parts:
            events.append(self._close_part(end_dts))
            part_count = self._part_index + 1
        events.append(
            SegmentClosed(
                sequence=self._next_sequence,
                start_dts=self._seg_start,
                duration_ticks=end_dts - self._seg_start,
                access_units=tuple(self._aus),
                keyframe_count=self._seg_keyframes,
                discontinuity=self._pending_discontinuity,
                part_count=part_count,
            )
        )
        self._pending_discontinuity = False
        self._next_sequence += 1
        self._open = False
        self._aus = []
        return events

    def _forget_timeline(self) -> None:
        self._open = False
        self._aus = []
        self._open_bytes = 0
        self._last_keyframe_dts = None
        self._timeline_start = None
        self._inner_keyframe = None
