"""The source rendition of one live publish: access units in, CMAF segments out. No I/O.

A publisher's clock starts wherever its encoder likes; the packager re-bases it onto the
session timeline (`timeline_start`), so a publisher that reconnects into the same session
continues where the previous connection stopped, with sequence numbers continuing too.

Segments stay within what the presentation's target duration allows where the keyframes let
them (`Segmenter.max_duration_ticks`). `target_duration` is that value when the presentation
already has one; without it, the packager fixes it from its first segment, as the
presentation's first segment fixes it (`media.hls.target_duration`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media.codecs.hevc import skipped_leading_pictures
from media.hls.segmenter import SegmentClosed, Segmenter, SegmenterEvent
from media.hls.target_duration import max_segment_ticks, presentation_target_duration
from media.mp4.fmp4 import fragments_from_access_units, init_segment, media_segment
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind, VideoCodec, VideoConfig

# Without a video sequence header after this much audio, the publish is audio-only.
AUDIO_ONLY_DECISION_TICKS = CLOCK_HZ
# Audio held while waiting for that decision; beyond it the oldest is dropped.
MAX_PENDING_UNITS = 512


@dataclass(frozen=True, slots=True)
class InitSegment:
    index: int
    data: bytes
    video: VideoConfig | None
    audio: AudioConfig | None

    @property
    def codecs(self) -> str:
        return ",".join(c.codec_string for c in (self.video, self.audio) if c is not None)


@dataclass(frozen=True, slots=True)
class PackagedSegment:
    sequence: int
    start_ticks: int
    duration_ticks: int
    data: bytes
    init: InitSegment
    discontinuity: bool
    # False when it opens on an open-GOP picture (an HEVC CRA followed by RASL pictures,
    # x265's default) that needs the previous segment: not an EXT-X-INDEPENDENT-SEGMENTS one.
    independent: bool = True
    video_frames: int = 0

    @property
    def duration(self) -> float:
        return self.duration_ticks / CLOCK_HZ

    @property
    def end_ticks(self) -> int:
        return self.start_ticks + self.duration_ticks

    @property
    def frame_rate(self) -> float | None:
        """Frames over duration: the frame rate when neither the SPS nor the publisher says."""
        if not (self.video_frames and self.duration_ticks):
            return None
        return self.video_frames * CLOCK_HZ / self.duration_ticks


@dataclass
class SegmentPackager:
    target_seconds: float
    first_sequence: int = 0
    timeline_start: int = 0
    init_index: int = 0
    discontinuity: bool = False
    target_duration: int | None = None
    # Bounds of the open segment (`Segmenter`): target durations and bytes; None: unbounded.
    max_open_targets: float | None = None
    max_open_bytes: int | None = None
    video: VideoConfig | None = None
    audio: AudioConfig | None = None
    _segmenter: Segmenter | None = None
    _init: InitSegment | None = None
    _shift: int | None = None
    _audio_anchor: int | None = None
    _media_end: int = 0
    _last_video_dts: int | None = None
    _pending: list[AccessUnit] = field(default_factory=list)
    _has_video: bool = False

    @property
    def segmenter(self) -> Segmenter | None:
        return self._segmenter

    @property
    def init(self) -> InitSegment | None:
        return self._init

    def configure(self, config: VideoConfig | AudioConfig) -> list[PackagedSegment]:
        """A sequence header. A changed one mid-publish starts a new init and a discontinuity."""
        if isinstance(config, VideoConfig):
            changed, self.video = self.video not in (None, config), config
        else:
            changed, self.audio = self.audio not in (None, config), config
        if not changed or self._segmenter is None:
            return []
        closed = self._package(self._segmenter.mark_discontinuity(self._end_or_none()))
        self._init = self._make_init(self.init_index + 1)
        self._audio_anchor = None
        return closed

    def push(self, au: AccessUnit) -> list[PackagedSegment]:
        if self._segmenter is None:
            return self._wait_for_tracks(au)
        return self._feed(au)

    def flush(self) -> list[PackagedSegment]:
        """End of publish: close the last segment where its last frame, of either track, ends."""
        if self._segmenter is None:
            return []
        return self._package(self._segmenter.flush(self._end_or_none()))

    def _end_or_none(self) -> int | None:
        return self._media_end if self._shift is not None else None

    def _feed(self, au: AccessUnit) -> list[PackagedSegment]:
        """Re-base onto the session timeline and segment.

        The timeline starts at the first unit a segment can start with (a keyframe, or the
        first audio frame without video), so segment durations tile it exactly and their sum
        is where a reconnecting publisher continues.
        """
        if self._shift is None:
            if self._has_video and not (au.kind is TrackKind.VIDEO and au.keyframe):
                return []
            self._shift = self.timeline_start - au.dts
        dts, pts = au.dts + self._shift, au.pts + self._shift
        if au.kind is TrackKind.AUDIO:
            if self.audio is not None:
                frame = self.audio.frame_samples * CLOCK_HZ // self.audio.sample_rate
                self._media_end = max(self._media_end, dts + frame)
        else:
            # With B-frames a frame can be shown after later-decoded ones: its end counts in
            # presentation time too, or a reconnecting publisher would overlap it.
            frame = dts - self._last_video_dts if self._last_video_dts is not None else 0
            self._media_end = max(self._media_end, max(dts, pts) + frame)
            self._last_video_dts = dts
        return self._package(
            self._segmenter.push(AccessUnit(au.kind, dts, pts, au.keyframe, au.data))
        )

    def _wait_for_tracks(self, au: AccessUnit) -> list[PackagedSegment]:
        """Start segmenting once we know whether there is video: its config, or 1 s of audio."""
        self._pending.append(au)
        if len(self._pending) > MAX_PENDING_UNITS:
            del self._pending[0]
        has_video = self.video is not None and au.kind is TrackKind.VIDEO
        audio_only = (
            self.video is None
            and au.kind is TrackKind.AUDIO
            and au.dts - self._pending[0].dts >= AUDIO_ONLY_DECISION_TICKS
        )
        if not (has_video or audio_only) or (audio_only and self.audio is None):
            return []
        self._has_video = has_video
        self._segmenter = Segmenter(
            round(self.target_seconds * CLOCK_HZ),
            has_video=has_video,
            first_sequence=self.first_sequence,
            max_duration_ticks=max_segment_ticks(
                self.target_duration or presentation_target_duration(self.target_seconds, 0.0)
            ),
            max_open_ticks=None
            if self.max_open_targets is None
            else round(self.max_open_targets * self.target_seconds * CLOCK_HZ),
            max_open_bytes=self.max_open_bytes,
        )
        if self.discontinuity:
            self._segmenter.mark_discontinuity()
        self._init = self._make_init(self.init_index)
        pending, self._pending = self._pending, []
        closed: list[PackagedSegment] = []
        for unit in pending:
            if unit.kind is TrackKind.AUDIO or has_video:
                closed += self._feed(unit)
        return closed

    def _make_init(self, index: int) -> InitSegment:
        self.init_index = index
        video = self.video if self._has_video else None
        return InitSegment(index, init_segment(video, self.audio), video, self.audio)

    def _package(self, events: list[SegmenterEvent]) -> list[PackagedSegment]:
        return [self._segment(e) for e in events if isinstance(e, SegmentClosed)]

    def _segment(self, closed: SegmentClosed) -> PackagedSegment:
        assert self._init is not None
        video = [au for au in closed.access_units if au.kind is TrackKind.VIDEO]
        audio = [au for au in closed.access_units if au.kind is TrackKind.AUDIO]
        if self._audio_anchor is None and audio:
            # The first audio the segmenter kept: never before the timeline starts.
            self._audio_anchor = audio[0].dts
        fragments = fragments_from_access_units(
            video,
            audio if self._init.audio else [],
            video_end_dts=closed.end_dts,
            audio_config=self._init.audio,
            audio_anchor_dts=self._audio_anchor,
        )
        if self.target_duration is None:
            self.target_duration = presentation_target_duration(
                self.target_seconds, closed.duration_seconds
            )
            assert self._segmenter is not None
            self._segmenter.max_duration_ticks = max_segment_ticks(self.target_duration)
        hevc = self._init.video is not None and self._init.video.codec is VideoCodec.HEVC
        return PackagedSegment(
            closed.sequence,
            closed.start_dts,
            closed.duration_ticks,
            media_segment(closed.sequence + 1, fragments),
            self._init,
            closed.discontinuity,
            independent=not (hevc and skipped_leading_pictures([au.data for au in video])),
            video_frames=len(video),
        )
