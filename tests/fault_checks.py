"""What a fault injected during a publish must not have cost, read from a running stack: a
watch over the publish (what the API answered, which statuses the session went through,
which webhooks went out when) and the recording afterwards (every variant lists every
segment, none a GAP, and decodes whole).

No pytest in here: the fault tests (tests/faults/) assert on these, bench scripts print them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import m3u8
from sqlalchemy import select

from core.db import session_scope
from core.models import Rendition, Segment, SegmentStatus
from media.ladder import SOURCE
from tests.fault_stack import FaultStack
from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack
from tests.media import decode, publish
from tests.services import WebhookReceiver, wait_for

SAMPLE_SECONDS = 0.5


class PublishWatch:
    """Samples, every half second while the block runs, what the API answers for the stream
    (its REST resource and its master playlist; 0: no answer, `failures` says why) and the
    session statuses in the database (None when the database does not answer)."""

    def __init__(self, stack: LiveStack, stream_id: str) -> None:
        self.stack = stack
        self.stream_id = stream_id
        self.api_statuses: dict[str, Counter[int]] = {}
        self.session_statuses: set[str | None] = set()
        self.failures: Counter[str] = Counter()
        self.not_live: list[tuple[float, list[str]]] = []  # (when, statuses) of any sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PublishWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def paths(self) -> list[str]:
        return [f"/api/v1/streams/{self.stream_id}", f"/hls/{self.stream_id}/master.m3u8"]

    def answers_other_than(self, *allowed: int) -> dict[str, dict[int, int]]:
        """Per path, the answers (status: count) not in `allowed`; 0 is no answer at all."""
        return {
            path: {code: n for code, n in counter.items() if code not in allowed}
            for path, counter in self.api_statuses.items()
            if any(code not in allowed for code in counter)
        }

    def _run(self) -> None:
        with self.stack.client() as client:
            while not self._stop.is_set():
                for path in self.paths:
                    try:
                        code = client.get(path, timeout=10).status_code
                    except httpx.HTTPError as exc:
                        code = 0
                        self.failures[f"{path}: {type(exc).__name__}"] += 1
                    self.api_statuses.setdefault(path, Counter())[code] += 1
                try:
                    statuses = self.stack.session_statuses(self.stream_id)
                except Exception:  # noqa: BLE001 - the database away is what is watched
                    self.session_statuses.add(None)
                else:
                    self.session_statuses.update(statuses)
                    if statuses and statuses != ["live"]:
                        self.not_live.append((time.monotonic(), statuses))
                self._stop.wait(SAMPLE_SECONDS)


def stream_webhooks(receiver: WebhookReceiver, stream_id: str) -> list[tuple[float, str]]:
    """(when received, event type) of the webhooks about the stream, in arrival order."""
    return [(d.received_at, json.loads(d.body)["type"]) for d in receiver.containing(stream_id)]


@dataclass
class VariantCheck:
    name: str
    sequences: list[int]
    gaps: int
    decode_errors: str
    decoded_seconds: float


@dataclass
class RecordingCheck:
    """A session's recording, every variant of it."""

    session_id: str
    variants: list[VariantCheck] = field(default_factory=list)

    def figures(self) -> dict[str, object]:
        return {
            v.name: {
                "segments": len(v.sequences),
                "gaps": v.gaps,
                "decoded_s": round(v.decoded_seconds, 2),
            }
            for v in self.variants
        }


def recording_variants(stack: LiveStack, session_id: str) -> dict[str, m3u8.M3U8]:
    """The recording's media playlists by variant name, as its master lists them."""
    base = f"{stack.api_url}/hls/sessions/{session_id}/"
    with httpx.Client(timeout=30) as client:
        master = m3u8.loads(client.get(base + "master.m3u8").raise_for_status().text, uri=base)
        return {
            variant.uri.split("/")[0]: m3u8.loads(
                client.get(variant.absolute_uri).raise_for_status().text,
                uri=variant.absolute_uri,
            )
            for variant in master.playlists
        }


def listed_sequences(playlist: m3u8.M3U8) -> tuple[list[int], int]:
    """The media sequence numbers a playlist lists, and how many of them are EXT-X-GAP."""
    first = playlist.media_sequence or 0
    gaps = sum(1 for segment in playlist.segments if segment.gap_tag)
    return [first + i for i in range(len(playlist.segments))], gaps


def wait_for_whole_ladder(
    stack: LiveStack, session_id: str, segments: int, timeout: float
) -> dict[str, m3u8.M3U8]:
    """The recording's playlists once every variant lists `segments` segments and no GAP
    (a rung segment whose task was lost is a GAP until the task, sent again, replaces it);
    as they are at the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        variants = recording_variants(stack, session_id)
        listed = [listed_sequences(playlist) for playlist in variants.values()]
        if all(len(seqs) == segments and gaps == 0 for seqs, gaps in listed):
            return variants
        if time.monotonic() > deadline:
            return variants
        time.sleep(1)


def check_recording(
    stack: LiveStack, session_id: str, segments: int, timeout: float = 90
) -> RecordingCheck:
    """Every variant of the session's recording: what it lists (waiting up to `timeout` for
    the ladder to complete) and what ffmpeg makes of it, decoded whole."""
    variants = wait_for_whole_ladder(stack, session_id, segments, timeout)
    urls = [f"{stack.api_url}/hls/sessions/{session_id}/{name}/index.m3u8" for name in variants]
    with ThreadPoolExecutor(len(urls) or 1) as decoders:  # ffmpeg waits mostly on the API
        decoded = list(decoders.map(decode, urls))
    check = RecordingCheck(session_id)
    for (name, playlist), (errors, seconds) in zip(variants.items(), decoded, strict=True):
        sequences, gaps = listed_sequences(playlist)
        check.variants.append(VariantCheck(name, sequences, gaps, errors, seconds))
    return check


def rung_outcomes(stack: LiveStack, session_id: str) -> dict[str, Counter[str]]:
    """Per rung, its segments by outcome: `ready`, `failed`, and `late` for one that missed
    its deadline (listed live as a GAP) and came afterwards, which the recording plays."""
    with session_scope(stack.settings.database_url) as db:
        rows = db.execute(
            select(Rendition.name, Segment.status, Segment.missed_deadline)
            .join(Segment, Segment.rendition_id == Rendition.id)
            .where(Rendition.session_id == uuid.UUID(session_id), Rendition.name != SOURCE)
        ).all()
    outcomes: dict[str, Counter[str]] = {}
    for name, status, late in rows:
        outcome = "late" if late and status == SegmentStatus.READY else status
        outcomes.setdefault(name, Counter())[outcome] += 1
    return outcomes


def caught_up(stack: LiveStack, stream_id: str) -> bool:
    """Whether the newest source segment stored ends within a target or so of now: the
    segments that waited in the spool are all in."""
    rows = stack.source_rows(stream_id)
    if not rows:
        return False
    newest = rows[-1][1]
    ends = newest.program_date_time.timestamp() + newest.duration
    return time.time() - ends < 1.5 * stack.settings.segment_seconds + 1


@dataclass
class FaultedPublish:
    """What a publish through one fault went through; `figures()` is the printable part."""

    fault: str
    stream: dict
    watch: PublishWatch
    hls: CheckedHls
    segments_before: int
    fault_seconds: float  # how long the fault took to inject (stop, down, start again)
    caught_up_seconds: float | None  # from the end of the fault; None: not within the publish
    publisher_code: int
    publisher_errors: str
    published_until: float  # time.monotonic() when the publisher exited
    rows: list = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    webhooks: list[tuple[float, str]] = field(default_factory=list)
    recording: RecordingCheck | None = None
    rungs: dict[str, Counter[str]] = field(default_factory=dict)

    def losses(self, source_seconds: float, variants: list[str]) -> list[str]:
        """What the fault cost, one line each; none when it cost nothing: the publisher went
        through, every source segment is recorded in order in one session that was live
        throughout and ended once, after the publish; the checked client saw no rule
        broken; every one of `variants` of the recording lists every segment, no GAP, and
        decodes whole (to half a second of `source_seconds`)."""
        found = []
        if self.publisher_code != 0:
            found.append(f"the publisher failed ({self.publisher_code}): {self.publisher_errors}")
        sessions = {session for session, _ in self.rows}
        if len(sessions) != 1:
            found.append(f"{len(sessions)} sessions, not one")
        sequences = [row.sequence for _, row in self.rows]
        if sequences != list(range(len(sequences))):
            found.append(f"source sequences not contiguous from 0: {sequences}")
        if self.watch.not_live:
            found.append(f"the session was not live while publishing: {self.watch.not_live}")
        if self.statuses != ["ended"]:
            found.append(f"session statuses after the publish: {self.statuses}")
        kinds = [kind for _, kind in self.webhooks]
        if kinds.count("stream.live") != 1 or kinds.count("stream.idle") != 1:
            found.append(f"webhooks: {kinds}")
        early = [
            kind
            for at, kind in self.webhooks
            if kind != "stream.live" and at < self.published_until
        ]
        if early:
            found.append(f"webhooks before the publish ended: {early}")
        if self.hls.checker.violations:
            found.append(f"HLS rules broken:\n{self.hls.checker.report()}")
        if self.recording is None:
            return found
        names = sorted(v.name for v in self.recording.variants)
        if names != sorted(variants):
            found.append(f"the recording's variants are {names}, not {sorted(variants)}")
        for v in self.recording.variants:
            if v.sequences != sequences or v.gaps:
                found.append(f"{v.name} lists {v.sequences} with {v.gaps} GAP(s)")
            if v.decode_errors or abs(v.decoded_seconds - source_seconds) > 0.5:
                found.append(f"{v.name} decodes {v.decoded_seconds:.2f} s: {v.decode_errors}")
        return found

    def figures(self) -> dict[str, object]:
        return {
            "fault": self.fault,
            "fault_s": round(self.fault_seconds, 1),
            "segments_before_fault": self.segments_before,
            "segments_recorded": len(self.rows),
            "caught_up_s_after_fault": None
            if self.caught_up_seconds is None
            else round(self.caught_up_seconds, 1),
            "api_answers": {p: dict(c) for p, c in self.watch.api_statuses.items()},
            "webhooks": [kind for _, kind in self.webhooks],
            "rungs": {name: dict(c) for name, c in self.rungs.items()},
            "recording": self.recording.figures() if self.recording else None,
        }


def publish_through_fault(
    stack: FaultStack,
    source: Path,
    fault: str,
    inject: Callable[[], None],
    *,
    watch_playlists_during: bool,
    ladder: list | None = None,
) -> FaultedPublish:
    """Publish `source` (ffmpeg, RTMP, in real time) to a new stream with `ladder`, call
    `inject` once three segments are stored, and collect what it cost once the publish is
    over and the session ended. The checked HLS client polls the stream's master (and all it
    lists) the whole time, or only outside the fault without `watch_playlists_during`:
    playlists stand still while segments wait in the spool, and that is the fault, not a
    rule broken."""
    stream = stack.create_stream(fault, ladder=ladder)
    master = f"/hls/{stream['id']}/master.m3u8"
    hls = CheckedHls(stack.api_url)
    publisher = publish(source, stack.rtmp_url(stream["stream_key"]))
    with ExitStack() as watching:
        with hls.watch(master):
            wait_for(lambda: len(stack.source_rows(stream["id"])) >= 3, 30, "3 segments")
            before = len(stack.source_rows(stream["id"]))
            watch = watching.enter_context(PublishWatch(stack, stream["id"]))
            if watch_playlists_during:
                fault_seconds = _timed(inject)
        if not watch_playlists_during:
            fault_seconds = _timed(inject)
        ended = time.monotonic()
        caught = None
        while publisher.poll() is None and caught is None:
            if caught_up(stack, stream["id"]):
                caught = time.monotonic() - ended
            time.sleep(0.2)
        with hls.watch(master):
            code = publisher.wait(120)
            published_until = time.monotonic()
    errors = publisher.stderr.read().decode() if publisher.stderr else ""
    outcome = FaultedPublish(
        fault=fault,
        stream=stream,
        watch=watch,
        hls=hls,
        segments_before=before,
        fault_seconds=fault_seconds,
        caught_up_seconds=caught,
        publisher_code=code,
        publisher_errors=errors,
        published_until=published_until,
    )
    wait_for(lambda: stack.session_statuses(stream["id"]) == ["ended"], 60, "the end")
    outcome.rows = stack.source_rows(stream["id"])
    outcome.statuses = stack.session_statuses(stream["id"])
    sessions = {str(session) for session, _ in outcome.rows}
    if len(sessions) == 1:
        [session_id] = sessions
        outcome.recording = check_recording(stack, session_id, len(outcome.rows))
        outcome.rungs = rung_outcomes(stack, session_id)
    # The end's webhooks go out through the worker, after the session ended.
    wait_for(
        lambda: (
            {"stream.idle", "session.ended"}
            <= {kind for _, kind in stream_webhooks(stack.webhooks, stream["id"])}
        ),
        60,
        "the end's webhooks",
    )
    outcome.webhooks = stream_webhooks(stack.webhooks, stream["id"])
    hls.close()
    return outcome


def _timed(call: Callable[[], None]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started
