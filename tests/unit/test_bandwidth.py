"""BANDWIDTH by RFC 8216bis's peak segment bit rate: runs of 0.5-1.5 target durations."""

from __future__ import annotations

from media.hls.bandwidth import SizedSegment, peak_segment_bit_rate, seeded_bit_rate


def _segments(*sizes_and_durations: tuple[int, float], first: int = 0) -> list[SizedSegment]:
    return [
        SizedSegment(first + n, size, duration)
        for n, (size, duration) in enumerate(sizes_and_durations)
    ]


def test_whole_segments_count_on_their_own_and_the_peak_is_the_largest() -> None:
    segments = _segments((250_000, 2.0), (500_000, 2.0), (250_000, 2.0))
    assert peak_segment_bit_rate(segments, 2) == 2_000_000


def test_a_short_flush_segment_counts_only_within_a_run_with_its_neighbour() -> None:
    # 0.2 s holding an IDR: 4 Mbit/s on its own, but shorter than half the target.
    segments = _segments((250_000, 2.0), (100_000, 0.2))
    assert peak_segment_bit_rate(segments, 2) == round(350_000 * 8 / 2.2)
    assert peak_segment_bit_rate(_segments((100_000, 0.2)), 2) is None


def test_runs_longer_than_one_and_a_half_targets_do_not_count() -> None:
    # Two 1.4 s segments: each is a run (>= 1 s), the pair (2.8 s) is one too, 3 of them not.
    segments = _segments((140_000, 1.4), (140_000, 1.4), (700_000, 1.4))
    assert peak_segment_bit_rate(segments, 2) == 4_000_000
    assert peak_segment_bit_rate(segments[:2], 2) == 800_000


def test_a_run_never_spans_a_missing_sequence() -> None:
    # Segment 1 is not there yet (a rung made out of order): 0 and 2 are no run together.
    segments = [SizedSegment(0, 50_000, 0.4), SizedSegment(2, 50_000, 0.4)]
    assert peak_segment_bit_rate(segments, 2) is None
    assert peak_segment_bit_rate([*segments, SizedSegment(1, 50_000, 0.4)], 2) == 1_000_000


def test_a_segment_longer_than_the_target_raises_it_so_it_still_counts() -> None:
    # A long-GOP source: 8 s segments at a 2 s target make TARGETDURATION 8.
    assert peak_segment_bit_rate(_segments((4_000_000, 8.0)), 2) == 4_000_000


def test_the_order_segments_arrive_in_does_not_matter() -> None:
    segments = _segments((250_000, 2.0), (100_000, 0.2), (300_000, 2.0), first=7)
    assert peak_segment_bit_rate(segments[::-1], 2) == peak_segment_bit_rate(segments, 2)


def test_a_seed_is_video_plus_audio_plus_the_container_overhead() -> None:
    assert seeded_bit_rate(3_300_000, 128_000) == 3_599_400
    assert seeded_bit_rate(0, 0) == 0
