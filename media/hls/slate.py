"""Slate segments: flat mid-grey video and silent AAC as fMP4, generated from nothing.

While a publisher is away, live playlists keep advancing with slate segments (after an
EXT-X-DISCONTINUITY and with their own EXT-X-MAP) instead of EXT-X-GAP entries, which some
players treat as fatal at the live edge. They are real media a player decodes like any
other; generating one costs about a millisecond (bench/slate.py), so they are made on request.

Timing: a segment's tracks start at round(start_seconds * timescale) and end at
round((start_seconds + duration_seconds) * timescale), so segments whose start grows by the
previous duration tile each track without a gap or an overlap. Video runs at
`SLATE_FRAME_RATE` with the last frame shortened to end on time; audio is whole AAC frames,
the last one's duration likewise shortened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from media.codecs.aac import SAMPLE_RATES, build_asc, parse_asc
from media.codecs.aac_silence import silent_frame
from media.codecs.h264 import join_avcc, video_config_from_avcc
from media.codecs.h264_grey import (
    grey_avcc,
    grey_idr_picture,
    grey_parameter_sets,
    grey_skip_picture,
)
from media.mp4.fmp4 import (
    AAC_FRAME_SAMPLES,
    AUDIO_TRACK_ID,
    VIDEO_TIMESCALE,
    VIDEO_TRACK_ID,
    Sample,
    TrackFragment,
    init_segment,
    media_segment,
)
from media.types import AudioConfig, VideoConfig

SLATE_FRAME_RATE = 25
MIN_SIDE = 16
MAX_WIDTH, MAX_HEIGHT = 4096, 2304
MAX_DURATION_SECONDS = 60.0
_AAC_LC = 2
_FRAME_TICKS = VIDEO_TIMESCALE // SLATE_FRAME_RATE


@dataclass(frozen=True, slots=True)
class SlateFormat:
    """What the slate looks like: the size of its picture and the layout of its silence.

    A track whose fields are None is left out; at least one must be present.
    """

    width: int | None  # None: no video track
    height: int | None
    sample_rate: int | None  # None: no audio track
    channels: int | None  # 1 or 2

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError(
                "slate width and height are both given or both None, got "
                f"{self.width}x{self.height}"
            )
        if (self.sample_rate is None) != (self.channels is None):
            raise ValueError(
                "slate sample_rate and channels are both given or both None, got "
                f"{self.sample_rate} Hz and {self.channels} channels"
            )
        if self.width is None and self.sample_rate is None:
            raise ValueError("a slate needs a video or an audio track, got neither")
        if self.width is not None and self.height is not None:
            if not (MIN_SIDE <= self.width <= MAX_WIDTH and MIN_SIDE <= self.height <= MAX_HEIGHT):
                raise ValueError(
                    f"slate size must be {MIN_SIDE}..{MAX_WIDTH} x {MIN_SIDE}..{MAX_HEIGHT}, "
                    f"got {self.width}x{self.height}"
                )
            if self.width % 2 or self.height % 2:
                raise ValueError(
                    f"slate width and height must be even (4:2:0 crops in steps of 2), "
                    f"got {self.width}x{self.height}"
                )
        if self.sample_rate is not None and self.sample_rate not in SAMPLE_RATES:
            raise ValueError(
                f"slate sample rate must be one of {', '.join(map(str, SAMPLE_RATES))} Hz, "
                f"got {self.sample_rate}"
            )
        if self.channels is not None and self.channels not in (1, 2):
            raise ValueError(f"slate audio has 1 or 2 channels, got {self.channels}")


def _video_config(fmt: SlateFormat) -> VideoConfig | None:
    if fmt.width is None or fmt.height is None:
        return None
    return video_config_from_avcc(grey_avcc(fmt.width, fmt.height, SLATE_FRAME_RATE))


def _audio_config(fmt: SlateFormat) -> AudioConfig | None:
    if fmt.sample_rate is None or fmt.channels is None:
        return None
    # Channel configurations 1 and 2 are one and two channels.
    return parse_asc(build_asc(_AAC_LC, fmt.sample_rate, fmt.channels))


def slate_init(fmt: SlateFormat) -> bytes:
    """The init segment (EXT-X-MAP) of the slate's tracks."""
    return init_segment(_video_config(fmt), _audio_config(fmt))


def slate_codecs(fmt: SlateFormat) -> str:
    """The RFC 6381 CODECS value of what `slate_init` declares, video first."""
    configs = (_video_config(fmt), _audio_config(fmt))
    return ",".join(config.codec_string for config in configs if config is not None)


def _durations(length: int, step: int) -> list[int]:
    """`length` ticks as samples of `step` ticks, the last one shortened to end on time."""
    count = -(-length // step)
    return [step] * (count - 1) + [length - step * (count - 1)]


def _track_span(start_seconds: float, duration_seconds: float, timescale: int) -> tuple[int, int]:
    """(base decode time, length) of a track on `timescale`; see the module docstring."""
    base = round(start_seconds * timescale)
    length = round((start_seconds + duration_seconds) * timescale) - base
    if length < 1:
        raise ValueError(
            f"slate duration {duration_seconds} s is shorter than one tick of the "
            f"{timescale} Hz clock"
        )
    return base, length


def _video_fragment(
    width: int, height: int, sequence: int, start_seconds: float, duration_seconds: float
) -> TrackFragment:
    base, length = _track_span(start_seconds, duration_seconds, VIDEO_TIMESCALE)
    durations = _durations(length, _FRAME_TICKS)
    parameter_sets = join_avcc(grey_parameter_sets(width, height, SLATE_FRAME_RATE))
    idr = parameter_sets + grey_idr_picture(width, height, sequence & 0xFFFF)
    samples = [Sample(idr, durations[0])]
    samples += [
        Sample(grey_skip_picture(width, height, index), duration, sync=False)
        for index, duration in enumerate(durations[1:], start=1)
    ]
    return TrackFragment(VIDEO_TRACK_ID, base, samples)


def _audio_fragment(
    sample_rate: int, channels: int, start_seconds: float, duration_seconds: float
) -> TrackFragment:
    base, length = _track_span(start_seconds, duration_seconds, sample_rate)
    frame = silent_frame(channels)
    samples = [Sample(frame, duration) for duration in _durations(length, AAC_FRAME_SAMPLES)]
    return TrackFragment(AUDIO_TRACK_ID, base, samples)


def slate_segment(
    fmt: SlateFormat, *, sequence: int, start_seconds: float, duration_seconds: float
) -> bytes:
    """One slate media segment (styp + moof + mdat) from `start_seconds` on the session
        timeline, lasting `duration_seconds`, with mfhd sequence number `sequence`.

        Its video starts with an IDR picture, so every slate segment is independent, and that
    picture's sample carries the SPS and PPS as well as the init segment does: a decoder that
    kept the stream's parameter sets across the EXT-X-MAP before the slate learns the grey ones.
    """
    if not 0 < duration_seconds <= MAX_DURATION_SECONDS:
        raise ValueError(
            f"slate duration must be more than 0 and at most {MAX_DURATION_SECONDS:g} s, "
            f"got {duration_seconds}"
        )
    if not (math.isfinite(start_seconds) and start_seconds >= 0):
        raise ValueError(f"slate start must be a finite time >= 0 s, got {start_seconds}")
    if not 0 <= sequence <= 0xFFFF_FFFF:
        raise ValueError(f"slate sequence number must fit 32 bits, got {sequence}")
    fragments = []
    if fmt.width is not None and fmt.height is not None:
        fragments.append(
            _video_fragment(fmt.width, fmt.height, sequence, start_seconds, duration_seconds)
        )
    if fmt.sample_rate is not None and fmt.channels is not None:
        fragments.append(
            _audio_fragment(fmt.sample_rate, fmt.channels, start_seconds, duration_seconds)
        )
    return media_segment(sequence, fragments)
