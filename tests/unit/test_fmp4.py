"""The fMP4 writer against real media: ffmpeg makes a source, ffmpeg/ffprobe read our output."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from media.mp4.fmp4 import (
    AAC_FRAME_SAMPLES,
    AUDIO_TRACK_ID,
    SAMPLE_FLAGS_NON_SYNC,
    SAMPLE_FLAGS_SYNC,
    VIDEO_TRACK_ID,
    Fmp4Error,
    Sample,
    TrackFragment,
    fragments_from_access_units,
    init_segment,
    media_segment,
)
from media.types import CLOCK_HZ, AccessUnit, AudioConfig, TrackKind, VideoCodec, VideoConfig
from tests.media import make_source

SEGMENT_SECONDS = 2
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed",
)

# ------------------------------------------------------------------------- a tiny box walker

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf", b"stbl", b"mvex", b"moof", b"traf"}
# Boxes with a fixed-size body before their child boxes.
CHILDREN_AFTER = {b"stsd": 8, b"dref": 8, b"avc1": 78, b"mp4a": 28}


@dataclass
class Box:
    type: bytes
    start: int
    size: int
    body: bytes
    children: list[Box] = field(default_factory=list)

    def find(self, path: str) -> Box:
        return find(self.children, path)

    def find_all(self, fourcc: str) -> list[Box]:
        return [c for c in self.children if c.type == fourcc.encode()]


def walk(buf: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """Parse boxes in buf[start:end], recursing into containers; sizes must tile exactly."""
    end = len(buf) if end is None else end
    boxes, pos = [], start
    while pos < end:
        size, fourcc = struct.unpack_from(">I4s", buf, pos)
        assert size >= 8 and pos + size <= end, f"box {fourcc!r} at {pos} overruns its parent"
        b = Box(fourcc, pos, size, bytes(buf[pos + 8 : pos + size]))
        if fourcc in CONTAINERS:
            b.children = walk(buf, pos + 8, pos + size)
        elif fourcc in CHILDREN_AFTER:
            b.children = walk(buf, pos + 8 + CHILDREN_AFTER[fourcc], pos + size)
        boxes.append(b)
        pos += size
    assert pos == end, "child sizes do not add up to the parent's size"
    return boxes


def find(boxes: list[Box], path: str) -> Box:
    head, _, rest = path.partition("/")
    (match,) = [b for b in boxes if b.type == head.encode()]
    return match.find(rest) if rest else match


@dataclass
class Trun:
    data_offset: int
    durations: list[int]
    sizes: list[int]
    flags: list[int]
    offsets: list[int]


def parse_trun(body: bytes) -> Trun:
    version_flags, count = struct.unpack_from(">II", body)
    version, flags = version_flags >> 24, version_flags & 0xFFFFFF
    assert version == 1 and flags & 0x1, "trun v1 with a data offset"
    (data_offset,) = struct.unpack_from(">i", body, 8)
    fields = [
        f for f, bit in (("d", 0x100), ("s", 0x200), ("f", 0x400), ("c", 0x800)) if flags & bit
    ]
    assert fields[:3] == ["d", "s", "f"]
    fmt = ">" + "IIIi"[: len(fields)] * count
    values = struct.unpack_from(fmt, body, 12)
    n = len(fields)
    cols = [list(values[i::n]) for i in range(n)]
    return Trun(data_offset, cols[0], cols[1], cols[2], cols[3] if n == 4 else [0] * count)


def traf_summary(traf: Box) -> tuple[int, int, Trun]:
    _, track_id = struct.unpack_from(">II", traf.find("tfhd").body)
    vf, base = struct.unpack_from(">IQ", traf.find("tfdt").body)
    assert vf >> 24 == 1
    return track_id, base, parse_trun(traf.find("trun").body)


# ------------------------------------------------------------------------- the real source


@dataclass
class Source:
    path: Path
    video: VideoConfig
    audio: AudioConfig
    video_aus: list[AccessUnit]
    audio_aus: list[AccessUnit]


@dataclass
class Packaged:
    directory: Path
    source: Source
    init: bytes
    segments: list[bytes]
    fragments: list[list[TrackFragment]]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def read_source(path: Path) -> Source:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        avcc = bytes(vstream.codec_context.extradata)
        asc = bytes(astream.codec_context.extradata)
        # avcC bytes 1..3 are the profile, constraint flags and level (14496-15 5.3.3.1).
        video = VideoConfig(
            VideoCodec.H264,
            avcc,
            vstream.codec_context.width,
            vstream.codec_context.height,
            f"avc1.{avcc[1:4].hex()}",
        )
        audio = AudioConfig(
            asc, asc[0] >> 3, astream.codec_context.sample_rate, astream.codec_context.channels
        )
        video_aus, audio_aus = [], []
        for packet in container.demux():
            if packet.dts is None or packet.size == 0:
                continue
            scale = packet.time_base * CLOCK_HZ
            dts, pts = packet.dts * scale, packet.pts * scale
            assert isinstance(dts, Fraction) and dts.denominator == 1 == pts.denominator
            is_video = packet.stream.type == "video"
            au = AccessUnit(
                TrackKind.VIDEO if is_video else TrackKind.AUDIO,
                int(dts),
                int(pts),
                packet.is_keyframe,
                bytes(packet),
            )
            (video_aus if is_video else audio_aus).append(au)
    return Source(path, video, audio, video_aus, audio_aus)


def cut_at_keyframes(
    video_aus: list[AccessUnit], audio_aus: list[AccessUnit]
) -> list[tuple[list[AccessUnit], list[AccessUnit], int | None]]:
    """(video, audio, next segment's first video dts) per segment, cut every 2 s at keyframes."""
    starts = [0]
    for i, au in enumerate(video_aus):
        if au.keyframe and au.dts - video_aus[starts[-1]].dts >= SEGMENT_SECONDS * CLOCK_HZ:
            starts.append(i)
    bounds = [*starts, len(video_aus)]
    cuts = []
    for k in range(len(starts)):
        video = video_aus[bounds[k] : bounds[k + 1]]
        end = video_aus[bounds[k + 1]].dts if bounds[k + 1] < len(video_aus) else None
        audio = [
            au
            for au in audio_aus
            if (k == 0 or au.dts >= video[0].dts) and (end is None or au.dts < end)
        ]
        cuts.append((video, audio, end))
    return cuts


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    path = tmp_path_factory.mktemp("source") / "src.flv"
    # FLV like RTMP delivers: millisecond timestamps, so audio dts jitter around the grid.
    make_source(path, seconds=6, size="1280x720", gop=60)
    return read_source(path)


@pytest.fixture(scope="module")
def packaged(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    directory = tmp_path_factory.mktemp("hls")
    init = init_segment(source.video, source.audio)
    (directory / "init.mp4").write_bytes(init)
    anchor = source.audio_aus[0].dts
    segments, all_fragments = [], []
    for k, (video, audio, end) in enumerate(cut_at_keyframes(source.video_aus, source.audio_aus)):
        fragments = fragments_from_access_units(
            video, audio, video_end_dts=end, audio_config=source.audio, audio_anchor_dts=anchor
        )
        segment = media_segment(k + 1, fragments)
        (directory / f"seg{k}.m4s").write_bytes(segment)
        segments.append(segment)
        all_fragments.append(fragments)
    (directory / "cat.mp4").write_bytes(init + b"".join(segments))
    return Packaged(directory, source, init, segments, all_fragments)


def probe_packets(path: Path) -> dict[str, list[dict]]:
    result = run(
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "stream=index,codec_type:packet=stream_index,pts,dts,flags",
        "-of",
        "json",
        path,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    doc = json.loads(result.stdout)
    kinds = {s["index"]: s["codec_type"] for s in doc["streams"]}
    packets: dict[str, list[dict]] = {kind: [] for kind in kinds.values()}
    for p in doc["packets"]:
        packets[kinds[p["stream_index"]]].append(p)
    return packets


def decode_errors(path: Path) -> str:
    result = run("ffmpeg", "-v", "error", "-i", path, "-f", "null", "-")
    assert result.returncode == 0, result.stderr
    return result.stderr


# ------------------------------------------------------------------------- end to end


@needs_ffmpeg
def test_source_has_b_frames_and_three_two_second_gops(source: Source) -> None:
    assert any(au.pts != au.dts for au in source.video_aus)
    assert sum(au.keyframe for au in source.video_aus) == 3
    assert len(cut_at_keyframes(source.video_aus, source.audio_aus)) == 3


@needs_ffmpeg
def test_init_plus_segments_decode_cleanly_with_every_frame_and_the_source_duration(
    packaged: Packaged,
) -> None:
    cat = packaged.directory / "cat.mp4"
    assert decode_errors(cat) == ""
    result = run(
        "ffprobe",
        "-v",
        "error",
        "-count_frames",
        "-show_entries",
        "stream=codec_type,nb_read_frames",
        "-of",
        "json",
        cat,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    counts = {
        s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(result.stdout)["streams"]
    }
    src = packaged.source
    assert counts == {"video": len(src.video_aus), "audio": len(src.audio_aus)}

    video = [f for frs in packaged.fragments for f in frs if f.track_id == VIDEO_TRACK_ID]
    written = video[-1].end_decode_time - video[0].base_media_decode_time
    source_duration = len(src.video_aus) * CLOCK_HZ // 30  # 30 fps source
    assert abs(written - source_duration) <= CLOCK_HZ // 30
    packets = probe_packets(cat)
    assert [(int(p["dts"]), int(p["pts"])) for p in packets["video"]] == [
        (au.dts, au.pts) for au in src.video_aus
    ]


@needs_ffmpeg
def test_hand_written_hls_playlist_with_ext_x_map_plays_without_errors(
    packaged: Packaged,
) -> None:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:3",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        '#EXT-X-MAP:URI="init.mp4"',
    ]
    for k, frs in enumerate(packaged.fragments):
        (video,) = [f for f in frs if f.track_id == VIDEO_TRACK_ID]
        seconds = (video.end_decode_time - video.base_media_decode_time) / CLOCK_HZ
        lines += [f"#EXTINF:{seconds:.5f},", f"seg{k}.m4s"]
    lines.append("#EXT-X-ENDLIST")
    playlist = packaged.directory / "index.m3u8"
    playlist.write_text("\n".join(lines) + "\n")
    result = run("ffmpeg", "-v", "error", "-i", playlist, "-map", "0", "-f", "framecrc", "-")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    frames = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")]
    assert len(frames) == len(packaged.source.video_aus) + len(packaged.source.audio_aus)


@needs_ffmpeg
def test_each_segment_on_its_own_starts_exactly_where_the_previous_one_ended(
    packaged: Packaged,
) -> None:
    src = packaged.source
    video_seen, audio_seen = [], []
    previous_video_end = None
    for k, segment in enumerate(packaged.segments):
        path = packaged.directory / f"alone{k}.mp4"
        path.write_bytes(packaged.init + segment)
        packets = probe_packets(path)
        video = [(int(p["dts"]), int(p["pts"])) for p in packets["video"]]
        assert packets["video"][0]["flags"].startswith("K")
        if previous_video_end is not None:
            assert video[0][0] == previous_video_end
        (traf,) = [
            t
            for t in find(walk(segment), "moof").find_all("traf")
            if traf_summary(t)[0] == VIDEO_TRACK_ID
        ]
        _, base, trun = traf_summary(traf)
        previous_video_end = base + sum(trun.durations)
        video_seen += video
        audio_seen += [int(p["pts"]) for p in packets["audio"]]
    # Every frame keeps its source timestamps, so presentation continues exactly too.
    assert video_seen == [(au.dts, au.pts) for au in src.video_aus]
    # Audio runs on one gap-free 1024-sample grid across all segment boundaries.
    first = round(src.audio_aus[0].dts * src.audio.sample_rate / CLOCK_HZ)
    assert audio_seen == [first + i * AAC_FRAME_SAMPLES for i in range(len(src.audio_aus))]


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_single_track_init_and_segments_decode(packaged: Packaged, kind: str) -> None:
    src = packaged.source
    video_only = kind == "video"
    init = init_segment(src.video if video_only else None, None if video_only else src.audio)
    assert b"cmfc" in find(walk(init), "ftyp").body
    body = bytearray(init)
    for k, (video, audio, end) in enumerate(cut_at_keyframes(src.video_aus, src.audio_aus)):
        fragments = fragments_from_access_units(
            video if video_only else [],
            [] if video_only else audio,
            video_end_dts=end,
            audio_config=None if video_only else src.audio,
            audio_anchor_dts=None if video_only else src.audio_aus[0].dts,
        )
        body += media_segment(k + 1, fragments)
    path = packaged.directory / f"{kind}_only.mp4"
    path.write_bytes(body)
    assert decode_errors(path) == ""
    packets = probe_packets(path)
    assert list(packets) == [kind]
    assert len(packets[kind]) == len(src.video_aus if video_only else src.audio_aus)


# ------------------------------------------------------------------------- box structure


@needs_ffmpeg
def test_media_segment_boxes_tile_and_each_trun_points_at_its_samples_in_mdat(
    packaged: Packaged,
) -> None:
    for k, (segment, fragments) in enumerate(
        zip(packaged.segments, packaged.fragments, strict=True)
    ):
        boxes = walk(segment)
        assert [b.type for b in boxes] == [b"styp", b"moof", b"mdat"]
        assert boxes[0].body[:4] == b"msdh"
        moof, mdat = boxes[1], boxes[2]
        assert struct.unpack(">II", moof.find("mfhd").body) == (0, k + 1)
        trafs = moof.find_all("traf")
        assert len(trafs) == len(fragments) == 2
        for traf, fragment in zip(trafs, fragments, strict=True):
            tfhd_flags, track_id = struct.unpack_from(">II", traf.find("tfhd").body)
            assert tfhd_flags & 0x020000  # default-base-is-moof
            _, base, trun = traf_summary(traf)
            assert (track_id, base) == (fragment.track_id, fragment.base_media_decode_time)
            start = moof.start + trun.data_offset
            assert mdat.start + 8 <= start and start + sum(trun.sizes) <= mdat.start + mdat.size
            pos = start
            for size, sample in zip(trun.sizes, fragment.samples, strict=True):
                assert segment[pos : pos + size] == sample.data
                pos += size


@needs_ffmpeg
def test_init_segment_describes_both_tracks_with_their_configs_verbatim(source: Source) -> None:
    boxes = walk(init_segment(source.video, source.audio))
    assert [b.type for b in boxes] == [b"ftyp", b"moov"]
    ftyp = boxes[0].body
    assert ftyp[:4] == b"iso6" and b"iso6" in ftyp[8:] and b"cmfc" not in ftyp[8:]
    moov = boxes[1]
    traks = moov.find_all("trak")
    assert len(traks) == 2
    ids, timescales = [], []
    for trak in traks:
        ids.append(struct.unpack_from(">I", trak.find("tkhd").body, 12)[0])
        timescales.append(struct.unpack_from(">I", trak.find("mdia/mdhd").body, 12)[0])
        stbl = trak.find("mdia/minf/stbl")
        for empty in ("stts", "stsc", "stco"):
            assert stbl.find(empty).body == bytes(8)
        assert stbl.find("stsz").body == bytes(12)
    assert ids == [VIDEO_TRACK_ID, AUDIO_TRACK_ID]
    assert timescales == [CLOCK_HZ, source.audio.sample_rate]

    avc1 = traks[0].find("mdia/minf/stbl/stsd/avc1")
    assert struct.unpack_from(">HH", avc1.body, 24) == (source.video.width, source.video.height)
    assert avc1.find("avcC").body == source.video.record
    mp4a = traks[1].find("mdia/minf/stbl/stsd/mp4a")
    channels, bits, _, _, rate = struct.unpack_from(">HHHHI", mp4a.body, 16)
    assert (channels, bits, rate >> 16) == (2, 16, 48000)
    esds = mp4a.find("esds").body
    assert esds.endswith(bytes((0x05, len(source.audio.asc))) + source.audio.asc + b"\x06\x01\x02")
    trex_ids = [struct.unpack_from(">I", t.body, 4)[0] for t in moov.find("mvex").find_all("trex")]
    assert trex_ids == ids


def test_init_segment_without_any_track_is_refused() -> None:
    with pytest.raises(Fmp4Error, match="at least one"):
        init_segment(None, None)
    assert issubclass(Fmp4Error, ValueError)


AVCC = bytes.fromhex("0164001fffe1000467640020ff01000468ee3cb0")
VIDEO = VideoConfig(VideoCodec.H264, AVCC, 640, 360, "avc1.64001f")
AUDIO = AudioConfig(bytes.fromhex("1190"), 2, 48000, 2)


def test_a_part_without_styp_is_just_moof_and_mdat() -> None:
    fragment = TrackFragment(AUDIO_TRACK_ID, 0, [Sample(b"\x01\x02", 1024)])
    part = media_segment(7, [fragment], with_styp=False)
    assert [b.type for b in walk(part)] == [b"moof", b"mdat"]
    full = media_segment(7, [fragment])
    assert full.endswith(part) and walk(full)[0].type == b"styp"
    assert b"cmfs" in walk(full)[0].body  # one track per moof: a CMAF segment


def test_negative_composition_offsets_and_sync_flags_are_written_per_sample() -> None:
    samples = [Sample(b"I", 3000, True, 6000), Sample(b"P", 3000, False, -3000)]
    seg = media_segment(1, [TrackFragment(VIDEO_TRACK_ID, 2**40, samples)])
    _, base, trun = traf_summary(find(walk(seg), "moof/traf"))
    assert base == 2**40  # tfdt version 1 holds 64-bit times
    assert trun.offsets == [6000, -3000]
    assert trun.flags == [SAMPLE_FLAGS_SYNC, SAMPLE_FLAGS_NON_SYNC]
    assert trun.durations == [3000, 3000] and trun.sizes == [1, 1]


def test_audio_trun_leaves_out_composition_offsets_when_all_are_zero() -> None:
    seg = media_segment(1, [TrackFragment(AUDIO_TRACK_ID, 0, [Sample(b"a", 1024)] * 3)])
    body = find(walk(seg), "moof/traf/trun").body
    assert not struct.unpack_from(">I", body)[0] & 0x800
    assert parse_trun(body).offsets == [0, 0, 0]


@pytest.mark.parametrize(
    ("fragments", "message"),
    [
        ([], "at least one track fragment"),
        ([TrackFragment(1, 0, [])], "at least one sample"),
        ([TrackFragment(1, 0, [Sample(b"x", 1)])] * 2, "unique"),
        ([TrackFragment(1, -1, [Sample(b"x", 1)])], "base_media_decode_time"),
        ([TrackFragment(1, 0, [Sample(b"x", -5)])], "out of range"),
        ([TrackFragment(1, 0, [Sample(b"x", 1, False, 2**31)])], "out of range"),
    ],
)
def test_media_segment_refuses_bad_fragments_with_a_clear_error(
    fragments: list[TrackFragment], message: str
) -> None:
    with pytest.raises(Fmp4Error, match=message):
        media_segment(1, fragments)


def video_au(dts: int, pts: int | None = None, keyframe: bool = False) -> AccessUnit:
    return AccessUnit(TrackKind.VIDEO, dts, dts if pts is None else pts, keyframe, b"\0\0\0\1\x65")


def audio_au(dts: int) -> AccessUnit:
    return AccessUnit(TrackKind.AUDIO, dts, dts, True, b"\x21\x00")


def test_last_video_frame_lasts_until_the_next_segment_or_else_as_long_as_the_one_before() -> None:
    aus = [video_au(1000, 7000, True), video_au(4000, 4000), video_au(7060, 10060)]
    (known,) = fragments_from_access_units(
        aus, [], video_end_dts=9990, audio_config=None, audio_anchor_dts=None
    )
    assert [s.duration for s in known.samples] == [3000, 3060, 2930]
    assert [s.composition_offset for s in known.samples] == [6000, 0, 3000]
    assert [s.sync for s in known.samples] == [True, False, False]
    assert known.base_media_decode_time == 1000 and known.end_decode_time == 9990
    (guessed,) = fragments_from_access_units(
        aus, [], video_end_dts=None, audio_config=None, audio_anchor_dts=None
    )
    assert guessed.samples[-1].duration == 3060


def test_video_dts_that_do_not_increase_are_refused() -> None:
    with pytest.raises(Fmp4Error, match="must increase"):
        fragments_from_access_units(
            [video_au(0, keyframe=True), video_au(0)],
            [],
            video_end_dts=None,
            audio_config=None,
            audio_anchor_dts=None,
        )
    with pytest.raises(Fmp4Error, match="must increase"):
        fragments_from_access_units(
            [video_au(100, keyframe=True)],
            [],
            video_end_dts=100,
            audio_config=None,
            audio_anchor_dts=None,
        )


def test_audio_without_its_config_or_mixed_with_video_is_refused() -> None:
    with pytest.raises(Fmp4Error, match="audio_config"):
        fragments_from_access_units(
            [], [audio_au(0)], video_end_dts=None, audio_config=None, audio_anchor_dts=0
        )
    with pytest.raises(Fmp4Error, match="expected audio"):
        fragments_from_access_units(
            [], [video_au(0)], video_end_dts=None, audio_config=AUDIO, audio_anchor_dts=0
        )


def test_first_audio_fragment_starts_at_the_rounded_first_dts() -> None:
    (fragment,) = fragments_from_access_units(
        [],
        [audio_au(4141), audio_au(6061)],
        video_end_dts=None,
        audio_config=AUDIO,
        audio_anchor_dts=None,
    )
    assert fragment.track_id == AUDIO_TRACK_ID
    assert fragment.base_media_decode_time == round(4141 * 48000 / CLOCK_HZ)  # 2208.5 -> 2209
    assert [s.duration for s in fragment.samples] == [1024, 1024]


def test_a_hole_of_whole_audio_frames_is_kept_so_audio_stays_in_sync() -> None:
    # 48 kHz: one frame is 1920 ticks; the third frame is missing.
    aus = [audio_au(0), audio_au(1920), audio_au(5760), audio_au(7680)]
    (fragment,) = fragments_from_access_units(
        [], aus, video_end_dts=None, audio_config=AUDIO, audio_anchor_dts=0
    )
    assert [s.duration for s in fragment.samples] == [1024, 2048, 1024, 1024]


def ms_rounded_audio(
    rate: int, count: int, start_ms: int, frame: int = AAC_FRAME_SAMPLES
) -> list[AccessUnit]:
    """AAC frames with FLV millisecond timestamps, as an RTMP encoder sends them."""
    return [
        audio_au(90 * (start_ms + (i * frame * 1000 + rate // 2) // rate)) for i in range(count)
    ]


@settings(max_examples=60, deadline=None)
@given(
    rate=st.sampled_from([44100, 48000, 32000, 22050, 24000]),
    he_aac=st.booleans(),
    start_ms=st.integers(0, 10**7),
    cuts=st.lists(st.integers(1, 400), min_size=1, max_size=8),
)
@example(rate=22050, he_aac=False, start_ms=1570, cuts=[1])  # anchor exactly on half a sample
@example(rate=48000, he_aac=True, start_ms=0, cuts=[47, 47])  # the audit's 21 ms hole
def test_audio_segments_never_overlap_or_gap_whatever_the_cut_points(
    rate: int, he_aac: bool, start_ms: int, cuts: list[int]
) -> None:
    # Explicit HE-AAC: the config's rate is SBR's output rate, where a frame is 2048 samples.
    frame = 2 * AAC_FRAME_SAMPLES if he_aac else AAC_FRAME_SAMPLES
    config = AudioConfig(b"\x12\x10", 5 if he_aac else 2, rate, 2, frame)
    aus = ms_rounded_audio(rate, sum(cuts) + 1, start_ms, frame)
    anchor = aus[0].dts
    # The writer rounds half up; Python's round() would round half to even.
    pos, expected_base = 0, (anchor * rate + CLOCK_HZ // 2) // CLOCK_HZ
    for n in cuts:
        (fragment,) = fragments_from_access_units(
            [],
            aus[pos : pos + n],
            video_end_dts=None,
            audio_config=config,
            audio_anchor_dts=anchor,
        )
        assert fragment.base_media_decode_time == expected_base
        assert all(s.duration == frame for s in fragment.samples)
        expected_base, pos = fragment.end_decode_time, pos + n


@settings(max_examples=60, deadline=None)
@given(
    tracks=st.lists(
        st.lists(
            st.tuples(
                st.binary(max_size=40),
                st.integers(0, 2**32 - 1),
                st.booleans(),
                st.integers(-(2**31), 2**31 - 1),
            ),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=3,
    ),
    sequence_number=st.integers(0, 2**32 - 1),
    with_styp=st.booleans(),
)
def test_any_samples_round_trip_through_moof_and_mdat(
    tracks: list[list[tuple[bytes, int, bool, int]]], sequence_number: int, with_styp: bool
) -> None:
    fragments = [
        TrackFragment(i + 1, i * 1000, [Sample(d, dur, sync, cto) for d, dur, sync, cto in track])
        for i, track in enumerate(tracks)
    ]
    seg = media_segment(sequence_number, fragments, with_styp=with_styp)
    boxes = walk(seg)
    moof, mdat = boxes[-2], boxes[-1]
    assert struct.unpack(">II", moof.find("mfhd").body)[1] == sequence_number
    assert mdat.start + mdat.size == len(seg)
    for traf, fragment in zip(moof.find_all("traf"), fragments, strict=True):
        track_id, base, trun = traf_summary(traf)
        assert (track_id, base) == (fragment.track_id, fragment.base_media_decode_time)
        samples = fragment.samples
        assert trun.durations == [s.duration for s in samples]
        assert trun.offsets == [s.composition_offset for s in samples]
        assert trun.flags == [s.flags for s in samples]
        pos = moof.start + trun.data_offset
        assert pos >= mdat.start + 8
        for size, sample in zip(trun.sizes, samples, strict=True):
            assert seg[pos : pos + size] == sample.data
            pos += size


def test_init_segment_refuses_a_record_unlike_its_codecs_or_a_config_without_size() -> None:
    assert walk(init_segment(VIDEO, None))[1].find("trak/tkhd").body[-8:] == struct.pack(
        ">II", 640 << 16, 360 << 16
    )
    with pytest.raises(Fmp4Error, match="not a avcC record"):
        init_segment(replace(VIDEO, record=b"\x00\x00\x00\x01\x67"), None)
    with pytest.raises(Fmp4Error, match="not a hvcC record"):
        init_segment(replace(VIDEO, codec=VideoCodec.HEVC), None)  # an avcC is too short
    with pytest.raises(Fmp4Error, match="1..65535"):
        init_segment(replace(VIDEO, width=0), None)


def test_audio_entry_falls_back_sensibly_for_pce_layouts_and_rates_above_16_bits() -> None:
    audio = AudioConfig(bytes.fromhex("0b80"), 2, 96000, 0)  # 96 kHz, channels in a PCE
    trak = walk(init_segment(None, audio))[1].find("trak")
    assert struct.unpack_from(">I", trak.find("mdia/mdhd").body, 12)[0] == 96000
    mp4a = trak.find("mdia/minf/stbl/stsd/mp4a")
    assert struct.unpack_from(">HHHHI", mp4a.body, 16) == (2, 16, 0, 0, 0)
