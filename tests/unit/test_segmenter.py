"""Segmenter behaviour on synthetic access units (no media bytes needed: cuts use timing only)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.hls.segmenter import (
    GopStats,
    PartClosed,
    SegmentClosed,
    Segmenter,
    SegmenterError,
    SegmenterEvent,
    SegmentOverflowError,
)
from media.hls.target_duration import max_segment_ticks
from media.types import CLOCK_HZ, AccessUnit, TrackKind

V, A = TrackKind.VIDEO, TrackKind.AUDIO
TWO_SECONDS = 2 * CLOCK_HZ


def video(dts: int, keyframe: bool = False) -> AccessUnit:
    return AccessUnit(V, dts, dts, keyframe, b"v")


def audio(dts: int) -> AccessUnit:
    return AccessUnit(A, dts, dts, True, b"a")


def flv_ms_30fps(frames: int, keyint: int, start_frame: int = 0) -> list[AccessUnit]:
    """30 fps as FLV carries it: whole milliseconds (0, 33, 67, 100, ...), times 90."""
    return [
        video(round(n * 1000 / 30) * 90, keyframe=n % keyint == 0)
        for n in range(start_frame, start_frame + frames)
    ]


def run(seg: Segmenter, aus: Iterable[AccessUnit], end_dts: int | None = None) -> list:
    events: list[SegmenterEvent] = []
    for au in aus:
        events.extend(seg.push(au))
    events.extend(seg.flush(end_dts))
    return events


def segments_of(events: list[SegmenterEvent]) -> list[SegmentClosed]:
    return [e for e in events if isinstance(e, SegmentClosed)]


def parts_of(events: list[SegmenterEvent]) -> list[PartClosed]:
    return [e for e in events if isinstance(e, PartClosed)]


def test_30fps_flv_millisecond_timestamps_cut_every_60_frames_at_exactly_two_seconds() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    segments = segments_of(run(seg, flv_ms_30fps(300, keyint=60), end_dts=10 * CLOCK_HZ))

    assert [len(s.access_units) for s in segments] == [60] * 5
    assert [s.duration_ticks for s in segments] == [TWO_SECONDS] * 5
    assert [f"{s.duration_seconds:.3f}" for s in segments] == ["2.000"] * 5
    assert [s.sequence for s in segments] == [0, 1, 2, 3, 4]
    assert all(s.keyframe_count == 1 for s in segments)
    assert seg.gop == GopStats(TWO_SECONDS, TWO_SECONDS)


def test_2997fps_cuts_every_60_frames_whether_timestamps_are_exact_or_milliseconds() -> None:
    exact = [video(n * 3003, keyframe=n % 60 == 0) for n in range(240)]
    millis = [video(round(n * 1001 / 30) * 90, keyframe=n % 60 == 0) for n in range(240)]

    for aus in (exact, millis):
        segments = segments_of(run(Segmenter(TWO_SECONDS, has_video=True), aus))
        assert [len(s.access_units) for s in segments] == [60] * 4
        assert [s.duration_ticks for s in segments[:-1]] == [180_180] * 3


def test_a_keyframe_within_half_a_frame_of_the_target_cuts_but_one_a_frame_early_does_not() -> None:
    # Encoder jitter: the keyframe lands 1 ms before the 2 s boundary.
    early_by_a_millisecond = [video(n * 3000, keyframe=n == 0) for n in range(60)]
    early_by_a_millisecond += [video(TWO_SECONDS - 90, keyframe=True), video(TWO_SECONDS + 2910)]
    segments = segments_of(run(Segmenter(TWO_SECONDS, has_video=True), early_by_a_millisecond))
    assert segments[0].duration_ticks == TWO_SECONDS - 90

    # A keyframe a whole frame (33 ms) early starts no segment; the next one does.
    frame_early = [video(n * 3000, keyframe=n in (0, 59, 119)) for n in range(130)]
    segments = segments_of(run(Segmenter(TWO_SECONDS, has_video=True), frame_early))
    assert segments[0].duration_ticks == 119 * 3000
    assert segments[0].keyframe_count == 2


def test_an_8_333_second_gop_gives_segments_as_long_as_the_gop_and_is_reported() -> None:
    # OBS's default keyframe interval: x264's keyint 250 at 30 fps.
    seg = Segmenter(TWO_SECONDS, has_video=True)
    segments = segments_of(run(seg, flv_ms_30fps(1000, keyint=250)))

    assert [len(s.access_units) for s in segments] == [250] * 4
    assert [f"{s.duration_seconds:.3f}" for s in segments] == ["8.333", "8.334", "8.333", "8.333"]
    assert seg.gop is not None
    assert seg.gop.max_ticks == 8334 * 90
    assert seg.gop.last_ticks == 8333 * 90
    assert round(seg.gop.max_seconds, 3) == 8.334


# The 2 s target's target duration (2) allows EXTINF up to 2.499 s.
LIMIT = max_segment_ticks(2)


def test_a_segment_that_would_pass_the_limit_is_cut_at_the_last_keyframe_inside_it() -> None:
    # Keyframes at 0, 1.5 s and 3.2 s: cutting at 3.2 s would make a 3.2 s segment.
    keyframes = {0, 45, 96}
    aus = [video(n * 3000, keyframe=n in keyframes) for n in range(150)]
    seg = Segmenter(TWO_SECONDS, has_video=True, max_duration_ticks=LIMIT)
    segments = segments_of(run(seg, aus))

    assert [s.start_dts for s in segments] == [0, 45 * 3000, 96 * 3000]
    assert [s.duration_ticks for s in segments] == [45 * 3000, 51 * 3000, 54 * 3000]
    assert all(s.duration_ticks <= LIMIT for s in segments)
    assert [s.keyframe_count for s in segments] == [1, 1, 1]
    assert [au for s in segments for au in s.access_units] == aus
    # without the limit the encoder's cadence gives one long segment first
    unlimited = segments_of(run(Segmenter(TWO_SECONDS, has_video=True), aus))
    assert unlimited[0].duration_ticks == 96 * 3000


def test_the_cut_happens_as_soon_as_the_segment_passes_the_limit_with_its_audio_after() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, max_duration_ticks=LIMIT)
    events: list[SegmenterEvent] = []
    stream = []
    for n in range(100):
        stream += [video(n * 3000, keyframe=n in (0, 30)), audio(n * 3000 + 100)]
    for au in stream:
        events += seg.push(au)
        if events:
            break
    # frame 75 (2.5 s) is the first whose segment would be longer than 2.499 s
    assert au == video(75 * 3000)
    [closed] = segments_of(events)
    assert closed.access_units == tuple(stream[:60])  # video and audio before the keyframe
    assert closed.duration_ticks == 30 * 3000


def test_a_gop_longer_than_the_limit_leaves_no_keyframe_to_cut_at() -> None:
    # OBS's 8.333 s GOP against a 2 s target duration: nothing to do but report it.
    seg = Segmenter(TWO_SECONDS, has_video=True, max_duration_ticks=LIMIT)
    segments = segments_of(run(seg, flv_ms_30fps(500, keyint=250)))
    assert [f"{s.duration_seconds:.3f}" for s in segments] == ["8.333", "8.333"]
    assert all(s.duration_ticks > LIMIT and s.keyframe_count == 1 for s in segments)
    assert seg.gop is not None and seg.gop.max_ticks > LIMIT


def test_flush_cuts_at_the_inner_keyframe_when_the_end_would_pass_the_limit() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, max_duration_ticks=LIMIT)
    aus = [video(n * 3000, keyframe=n in (0, 40)) for n in range(74)]  # last frame at 2.43 s
    segments = segments_of(run(seg, aus, end_dts=LIMIT + 3000))
    assert [(s.start_dts, s.duration_ticks) for s in segments] == [
        (0, 40 * 3000),
        (40 * 3000, LIMIT + 3000 - 40 * 3000),
    ]


def test_a_limit_below_the_target_or_with_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="at least the target"):
        Segmenter(TWO_SECONDS, has_video=True, max_duration_ticks=TWO_SECONDS - 1)
    with pytest.raises(ValueError, match="parts"):
        Segmenter(TWO_SECONDS, has_video=True, part_target_ticks=CLOCK_HZ, max_duration_ticks=LIMIT)


def test_gop_is_unknown_until_two_keyframes_were_seen() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    seg.push(video(0, keyframe=True))
    seg.push(video(3000))
    assert seg.gop is None
    seg.push(video(6000, keyframe=True))
    assert seg.gop == GopStats(6000, 6000)


def test_access_units_before_the_first_video_keyframe_are_dropped_and_counted() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    lead_in = [audio(0), video(0), audio(1920), video(3000), audio(3840)]
    # audio(5760) comes after the keyframe but is stamped before it: before the timeline.
    stream = [*lead_in, video(6000, keyframe=True), audio(5760), video(9000), audio(7680)]

    segments = segments_of(run(seg, stream))

    assert seg.dropped_before_keyframe == len(lead_in) + 1
    assert len(segments) == 1
    assert segments[0].access_units == (stream[5], stream[7], stream[8])
    assert segments[0].start_dts == 6000


def test_audio_stamped_before_a_later_keyframe_continues_the_previous_segment_and_is_kept() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    stream = [video(n * 3000, keyframe=n % 60 == 0) for n in range(60)]
    stream += [video(TWO_SECONDS, keyframe=True), audio(TWO_SECONDS - 1920)]
    stream += [video(TWO_SECONDS + 3000)]

    segments = segments_of(run(seg, stream))

    assert seg.dropped_before_keyframe == 0
    assert segments[1].access_units == tuple(stream[60:])
    # The same after a discontinuity: the new timeline starts at its first keyframe.
    seg.mark_discontinuity()
    late = [video(90_000, keyframe=True), audio(88_080), video(93_000), audio(90_000)]
    [segment] = segments_of(run(seg, late))
    assert segment.access_units == (late[0], late[2], late[3])
    assert seg.dropped_before_keyframe == 1


def test_audio_joins_the_open_segment_in_arrival_order_and_never_cuts() -> None:
    stream = []
    for n in range(120):
        stream.append(video(n * 3000, keyframe=n % 60 == 0))
        stream.append(audio(n * 3000 + 100))
    segments = segments_of(run(Segmenter(TWO_SECONDS, has_video=True), stream))

    assert [s.access_units for s in segments] == [tuple(stream[:120]), tuple(stream[120:])]
    assert segments[1].access_units[0].kind is V


def test_audio_only_stream_cuts_on_audio_timestamps_at_the_target() -> None:
    # AAC at 48 kHz: 1024 samples = 1920 ticks; 2 s is 93.75 frames, so cut at frame 94.
    seg = Segmenter(TWO_SECONDS, has_video=False)
    segments = segments_of(run(seg, [audio(n * 1920) for n in range(300)]))

    assert [len(s.access_units) for s in segments] == [94, 94, 94, 18]
    assert [s.duration_ticks for s in segments[:3]] == [94 * 1920] * 3
    assert segments[-1].duration_ticks == 18 * 1920  # flush adds the last frame interval
    assert all(s.keyframe_count == 0 for s in segments)
    assert seg.dropped_before_keyframe == 0
    assert seg.gop is None


def test_flush_ends_the_last_segment_at_end_dts_or_one_frame_after_the_last_frame() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    (last,) = segments_of(run(seg, [video(n * 3000, keyframe=n == 0) for n in range(10)]))
    assert last.duration_ticks == 10 * 3000

    seg = Segmenter(TWO_SECONDS, has_video=True)
    (last,) = segments_of(run(seg, [video(n * 3000, keyframe=n == 0) for n in range(10)], 28_000))
    assert last.duration_ticks == 28_000
    assert last.end_dts == 28_000


def test_flush_refuses_an_end_before_the_last_frame_and_does_nothing_when_idle() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    assert seg.flush() == []
    seg.push(video(0, keyframe=True))
    seg.push(video(3000))
    with pytest.raises(SegmenterError, match="before the last video dts 3000"):
        seg.flush(2999)


def test_video_timestamps_going_backwards_are_refused_with_the_offending_values() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    seg.push(video(9000, keyframe=True))
    with pytest.raises(SegmenterError, match="from 9000 to 0"):
        seg.push(video(0, keyframe=True))


def test_a_repeated_video_dts_is_refused_and_leaves_the_segment_intact() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    seg.push(video(0, keyframe=True))
    seg.push(video(3000))
    with pytest.raises(SegmenterError, match="video dts 3000 repeated"):
        seg.push(video(3000))
    [closed] = segments_of(seg.flush())
    assert [au.dts for au in closed.access_units] == [0, 3000]


def test_an_audio_only_stream_may_repeat_a_timestamp() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=False)
    assert run(seg, [audio(0), audio(0), audio(1920)])[0].access_units[1].dts == 0


def test_a_stream_without_keyframes_overflows_at_the_duration_bound_and_frees_it() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, max_open_ticks=10 * TWO_SECONDS)
    seg.push(video(0, keyframe=True))
    frames = [video(n * 3000) for n in range(1, 600 + 1)]  # 20 s at 30 fps, no keyframe
    for au in frames:
        assert seg.push(au) == []
        seg.push(audio(au.dts))
    with pytest.raises(SegmentOverflowError) as caught:
        seg.push(video(601 * 3000))
    message = str(caught.value)
    assert "20.03 s, over the limit of 20.0 s" in message
    assert "1201 units are discarded" in message
    assert seg.flush() == []  # nothing held any more
    # The next keyframe starts again; sequence numbers continue.
    [closed] = segments_of(run(seg, [video(700 * 3000, keyframe=True), video(701 * 3000)]))
    assert closed.sequence == 0 and closed.start_dts == 700 * 3000


def test_audio_piling_up_behind_a_stalled_video_track_overflows_too() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, max_open_ticks=3 * TWO_SECONDS)
    seg.push(video(0, keyframe=True))
    with pytest.raises(SegmentOverflowError, match="over the limit of 6.0 s"):
        for n in range(1, 1000):
            seg.push(audio(n * 1920))


def test_the_byte_bound_counts_what_the_open_segment_holds() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, max_open_bytes=1000)
    big = [AccessUnit(V, n * 3000, n * 3000, n % 60 == 0, bytes(10)) for n in range(200)]
    run(seg, big)  # 60 frames of 10 bytes per segment: well within
    seg = Segmenter(TWO_SECONDS, has_video=True, max_open_bytes=1000)
    seg.push(AccessUnit(V, 0, 0, True, bytes(600)))
    with pytest.raises(SegmentOverflowError, match="1200 bytes, over the limit of 1000 bytes"):
        seg.push(AccessUnit(V, 3000, 3000, False, bytes(600)))


def test_after_mark_discontinuity_the_next_segment_is_flagged_and_sequences_continue() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, first_sequence=40)
    first = run(seg, flv_ms_30fps(120, keyint=60))
    closed_by_mark = seg.mark_discontinuity()  # already flushed: nothing left to close
    # the new publisher restarts its clock at 0 and opens with two non-keyframes
    second_stream = [video(0), video(3000), *flv_ms_30fps(120, keyint=60, start_frame=2)]
    second_stream[2] = video(second_stream[2].dts, keyframe=True)
    second = run(seg, second_stream)

    assert closed_by_mark == []
    assert [(s.sequence, s.discontinuity) for s in segments_of(first)] == [(40, False), (41, False)]
    assert [(s.sequence, s.discontinuity) for s in segments_of(second)] == [
        (42, True),
        (43, False),
    ]
    assert segments_of(second)[0].start_dts == second_stream[2].dts
    assert seg.dropped_before_keyframe == 2
    assert seg.next_sequence == 44


def test_mark_discontinuity_closes_the_open_segment_of_the_old_publisher() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True)
    for au in flv_ms_30fps(30, keyint=60):
        seg.push(au)
    closed = segments_of(seg.mark_discontinuity(end_dts=90_000))
    assert [(s.sequence, s.duration_ticks, s.discontinuity) for s in closed] == [(0, 90_000, False)]

    # timestamps restart below the old ones: no error, the GOP is not measured across
    for au in flv_ms_30fps(61, keyint=60):
        seg.push(au)
    assert seg.gop == GopStats(TWO_SECONDS, TWO_SECONDS)


def test_a_new_segmenter_continues_another_processes_session_with_a_discontinuity() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, first_sequence=17)
    seg.mark_discontinuity()
    segments = segments_of(run(seg, flv_ms_30fps(120, keyint=60)))
    assert [(s.sequence, s.discontinuity) for s in segments] == [(17, True), (18, False)]


def test_parts_are_emitted_in_order_before_their_segment_with_independent_flags() -> None:
    # 200 ms parts at 30 fps: six frames each, ten per 2 s segment; keyframe every 1 s.
    seg = Segmenter(TWO_SECONDS, has_video=True, part_target_ticks=CLOCK_HZ // 5)
    events = run(seg, flv_ms_30fps(120, keyint=30))

    kinds = ["P" if isinstance(e, PartClosed) else "S" for e in events]
    assert kinds == (["P"] * 10 + ["S"]) * 2
    first_segment_parts = parts_of(events)[:10]
    assert [p.part_index for p in first_segment_parts] == list(range(10))
    assert {p.segment_sequence for p in first_segment_parts} == {0}
    half = [True, False, False, False, False]  # the mid-segment keyframe starts part 5
    assert [p.independent for p in first_segment_parts] == half + half
    assert [p.duration_ticks for p in first_segment_parts] == [18_000] * 10
    assert segments_of(events)[0].part_count == 10
    joined = tuple(au for p in first_segment_parts for au in p.access_units)
    assert joined == segments_of(events)[0].access_units


def test_a_part_boundary_one_tick_short_on_millisecond_timestamps_still_cuts() -> None:
    # 1/3 s parts at 30 fps in FLV milliseconds: frame 10 lands on 333 ms = 29 970 ticks.
    seg = Segmenter(TWO_SECONDS, has_video=True, part_target_ticks=CLOCK_HZ // 3)
    parts = parts_of(run(seg, flv_ms_30fps(60, keyint=60), end_dts=180_000))
    assert [len(p.access_units) for p in parts] == [10] * 6
    assert sum(p.duration_ticks for p in parts) == 180_000


def test_the_segment_close_also_closes_a_short_final_part() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=True, part_target_ticks=CLOCK_HZ // 2)
    # keyframes every 70 frames at 30 fps (2.333 s): parts of 15 frames, then a 10-frame tail
    events = run(seg, [video(n * 3000, keyframe=n % 70 == 0) for n in range(140)])
    first = [p for p in parts_of(events) if p.segment_sequence == 0]
    assert [len(p.access_units) for p in first] == [15, 15, 15, 15, 10]
    assert events.index(segments_of(events)[0]) == len(first)


def test_without_a_part_target_no_parts_are_emitted() -> None:
    events = run(Segmenter(TWO_SECONDS, has_video=True), flv_ms_30fps(180, keyint=60))
    assert parts_of(events) == []
    assert all(s.part_count == 0 for s in segments_of(events))


def test_audio_only_parts_are_all_independent() -> None:
    seg = Segmenter(TWO_SECONDS, has_video=False, part_target_ticks=CLOCK_HZ // 2)
    parts = parts_of(run(seg, [AccessUnit(A, n * 1920, n * 1920, False, b"") for n in range(100)]))
    assert parts and all(p.independent for p in parts)


@pytest.mark.parametrize(
    ("target", "part_target", "first_sequence"),
    [(0, None, 0), (-5, None, 0), (TWO_SECONDS, 0, 0), (CLOCK_HZ, TWO_SECONDS, 0), (1, None, -1)],
)
def test_nonsensical_configuration_is_refused(
    target: int, part_target: int | None, first_sequence: int
) -> None:
    with pytest.raises(ValueError):
        Segmenter(
            target, has_video=True, part_target_ticks=part_target, first_sequence=first_sequence
        )


# property: whatever arrives, nothing is lost, reordered or double counted

_step = st.tuples(
    st.sampled_from([V, V, A]),
    st.integers(min_value=0, max_value=20_000),  # dts increment
    st.booleans(),  # keyframe
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(_step, max_size=200),
    has_video=st.booleans(),
    target=st.integers(min_value=1, max_value=400_000),
    part_divisor=st.sampled_from([None, 1, 3, 10]),
    first_sequence=st.integers(min_value=0, max_value=1000),
    limit_factor=st.sampled_from([None, 1.0, 1.25, 2.0]),
)
def test_closed_segments_tile_the_input_exactly(
    steps: list[tuple[TrackKind, int, bool]],
    has_video: bool,
    target: int,
    part_divisor: int | None,
    first_sequence: int,
    limit_factor: float | None,
) -> None:
    aus, dts = [], 0
    for kind, increment, keyframe in steps:
        dts += max(increment, 1) if kind is V else increment  # video dts must increase
        aus.append(AccessUnit(kind, dts, dts, keyframe, b""))
    part_target = None if part_divisor is None else max(1, target // part_divisor)
    limit = None if limit_factor is None or part_target else round(target * limit_factor)
    seg = Segmenter(
        target,
        has_video=has_video,
        part_target_ticks=part_target,
        first_sequence=first_sequence,
        max_duration_ticks=limit,
    )
    end = dts + 1
    events = run(seg, aus, end_dts=end)
    segments = segments_of(events)

    if has_video:
        openers = [i for i, au in enumerate(aus) if au.kind is V and au.keyframe]
    else:
        openers = [i for i, au in enumerate(aus) if au.kind is A]
    opener = openers[0] if openers else len(aus)
    assert seg.dropped_before_keyframe == opener
    assert [au for s in segments for au in s.access_units] == aus[opener:]
    assert [s.sequence for s in segments] == list(
        range(first_sequence, first_sequence + len(segments))
    )
    if not segments:
        return
    lead = V if has_video else A
    for s in segments:
        assert s.access_units[0].kind is lead
        assert s.access_units[0].keyframe or not has_video
        assert s.duration_ticks >= 0
    for s in segments[:-1]:
        # a segment cut short for the limit is followed by one that would have passed it
        assert s.duration_ticks >= target - target // 4 or limit is not None
    if limit is not None and has_video:
        # longer than the limit only when no keyframe inside it allowed a cut
        assert all(s.keyframe_count == 1 for s in segments if s.duration_ticks > limit)
    for s, following in zip(segments, segments[1:], strict=False):
        assert s.end_dts == following.start_dts
    assert sum(s.duration_ticks for s in segments) == end - segments[0].start_dts

    if part_target is None:
        assert parts_of(events) == []
        return
    # parts precede their segment, tile it, and carry its sequence number
    pending: list[PartClosed] = []
    for event in events:
        if isinstance(event, PartClosed):
            pending.append(event)
            continue
        assert [p.part_index for p in pending] == list(range(event.part_count))
        assert {p.segment_sequence for p in pending} == {event.sequence}
        assert tuple(au for p in pending for au in p.access_units) == event.access_units
        assert sum(p.duration_ticks for p in pending) == event.duration_ticks
        assert pending[0].independent
        assert all(p.duration_ticks >= 0 for p in pending)
        pending = []
    assert pending == []
