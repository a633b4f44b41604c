"""The faults of issue 12, injected for real while players play a live stream: a worker host
SIGKILLed in the middle of a ladder task, and a publisher whose connection drops and comes
back, within the reconnect grace window or after it (a new session).

Shared by tests/e2e/test_players_through_faults.py (back to back) and bench/player_faults.py
(spread over a 10-minute stream): `play_through_faults` runs the whole thing; `FaultScenario`
injects one fault at a time and records whether each player played on into media made after
it, the stall it cost, and, for the worker, how long until the rungs listed media again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from celery import Celery

from packager.enqueue import TRANSCODE_TASK
from tests.hls_poller import CheckedHls
from tests.media import publish
from tests.players import PlayerStats, TwoPlayers, chromium, page_server
from tests.services import nebula_process

POLL_SECONDS = 0.25


class LoopingPublisher:
    """`ffmpeg -re` publishing a file in a loop over RTMP: an encoder that runs until stopped."""

    def __init__(self, source: Path, url: str) -> None:
        self.source = source
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LoopingPublisher:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.drop()

    def start(self) -> None:
        self.process = publish(self.source, self.url, loop=True)

    def drop(self) -> None:
        """SIGKILL: the connection just ends, no unpublish is sent (a network drop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@dataclass
class WorkerHost:
    """One more `nebula-live worker` with a data dir of its own: a host that can die."""

    process: subprocess.Popen[bytes]
    node: str = ""  # its Celery node name, once it answered a ping

    def wait_ready(self, celery: Celery, timeout: float) -> None:
        prefix = f"live-{self.process.pid}@"  # how `nebula-live worker --pool live` names it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in celery.control.ping(timeout=1) or []:
                self.node = next((name for name in reply if name.startswith(prefix)), self.node)
            if self.node:
                return
        raise TimeoutError(f"worker {prefix}... did not answer a ping in {timeout} s")

    def kill_mid_task(self, celery: Celery, timeout: float) -> dict:
        """SIGKILL the whole host (its Celery process and every pool child) as soon as it is
        seen running a ladder task, to catch the transcode itself rather than its last
        writes; returns that task as Celery's inspect reported it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inspect = celery.control.inspect(destination=[self.node], limit=1, timeout=1)
            tasks = (inspect.active() or {}).get(self.node, [])
            running = [task for task in tasks if task.get("name") == TRANSCODE_TASK]
            if running:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
                return running[0]
            time.sleep(0.05)
        raise TimeoutError(f"worker {self.node} ran no ladder task in {timeout} s")


@contextmanager
def worker_host(env: Mapping[str, str], log_path: Path) -> Iterator[WorkerHost]:
    """Start a live ladder worker host with `env` (give it its own NEBULA_DATA_DIR); whatever
    is left of it is stopped when the block ends."""
    with nebula_process("worker", env, log_path, "--pool", "live") as process:
        yield WorkerHost(process)


@dataclass
class FaultOutcome:
    fault: str
    at_seconds: float  # since the scenario began
    advanced: dict[str, bool]  # per player: it played media made after the fault
    stall_seconds: dict[str, float] = field(default_factory=dict)  # per player, this fault
    latency_seconds: dict[str, float | None] = field(default_factory=dict)  # when judged
    rungs_relisted_seconds: float | None = None  # the worker kill only; None: not in time
    task: dict = field(default_factory=dict)  # the worker kill: the task it was running

    def summary(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "fault": self.fault,
            "at_s": round(self.at_seconds, 1),
            "advanced": self.advanced,
            "stall_s": {name: round(value, 2) for name, value in self.stall_seconds.items()},
            "latency_s": {
                name: None if value is None else round(value, 1)
                for name, value in self.latency_seconds.items()
            },
        }
        if self.task:
            relisted = self.rungs_relisted_seconds
            shown["rungs_relisted_s"] = None if relisted is None else round(relisted, 1)
            shown["killed_task"] = [self.task.get("name"), self.task.get("args")]
        return shown


@dataclass(frozen=True)
class FaultStage:
    """What a caller brings: the stream (as the API created it), a file to publish in a loop,
    the HLS client of the API, and how to start a worker host that may be killed."""

    hls: CheckedHls
    api_token: str
    stream: dict
    source: Path
    new_worker_host: Callable[[], AbstractContextManager[WorkerHost]]
    celery: Celery
    grace_seconds: float
    relist_timeout: float = 60.0
    advance_seconds: float = 2.0
    advance_timeout: float = 60.0
    start_timeout: float = 60.0


@dataclass(frozen=True)
class FaultRun:
    page_loads: int
    players: list[PlayerStats]
    outcomes: list[FaultOutcome]

    def figures(self) -> dict[str, object]:
        return {
            "page_loads": self.page_loads,
            "players": {player.name: player.summary() for player in self.players},
            "faults": [outcome.summary() for outcome in self.outcomes],
        }


def play_through_faults(stage: FaultStage, spacing: float = 0.0, duration: float = 0.0) -> FaultRun:
    """Publish the stream, open the players as a viewer would (once the master answers, not
    once the ladder is complete), inject the three faults `spacing` seconds apart from when
    both play (back to back with 0), play on until `duration` has passed, and return what
    the players went through. The HLS checker watches the master all along."""
    master = f"/hls/{stage.stream['id']}/master.m3u8"
    auth = {"Authorization": f"Bearer {stage.api_token}"}
    with (
        chromium() as browser,
        page_server() as page_url,
        LoopingPublisher(stage.source, stage.stream["rtmp_url"]) as publisher,
        stage.hls.watch(master),
        httpx.Client(base_url=stage.hls.base_url, headers=auth, timeout=30) as api,
    ):
        deadline = time.monotonic() + stage.start_timeout
        while stage.hls.get(master).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{master} did not answer in {stage.start_timeout} s")
            time.sleep(POLL_SECONDS)
        players = TwoPlayers(browser, page_url)
        players.open(stage.hls.url(master))
        if not all(players.wait_started(stage.start_timeout).values()):
            raise TimeoutError(f"the players did not start: {players.stats()}")
        scenario = FaultScenario(stage, players, publisher, api)
        faults = [scenario.kill_worker, scenario.drop_within_grace, scenario.drop_past_grace]
        for number, fault in enumerate(faults, start=1):
            time.sleep(max(0.0, scenario.started + number * spacing - time.monotonic()))
            fault()
        time.sleep(max(0.0, scenario.started + duration - time.monotonic()))
        run = FaultRun(players.page_loads(), players.stats(), scenario.outcomes)
        players.close()
    return run


@dataclass
class FaultScenario:
    """The faults, one at a time, while `players` play the stage's stream and the stage's
    HLS client watches its master. `api` is an authenticated client on the API.

    "Advanced" means a player showed media dated (EXT-X-PROGRAM-DATE-TIME) `advance_seconds`
    after the fault ended, within `advance_timeout`: not what it had buffered before, but
    what the stream made after, on the variant the player chose.
    """

    stage: FaultStage
    players: TwoPlayers
    publisher: LoopingPublisher
    api: httpx.Client
    outcomes: list[FaultOutcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def hls(self) -> CheckedHls:
        return self.stage.hls

    @property
    def stream_id(self) -> str:
        return self.stage.stream["id"]

    @property
    def master_path(self) -> str:
        return f"/hls/{self.stream_id}/master.m3u8"

    def kill_worker(self) -> FaultOutcome:
        """A worker host dies mid-task; the other workers carry on. Measures how long until
        every rung lists media (not a GAP) newer than the newest source segment at the kill:
        the rungs have moved past whatever the dead host held."""
        stalled = self._stall_totals()
        rungs = self._rungs(timeout=60)
        with self.stage.new_worker_host() as host:
            host.wait_ready(self.stage.celery, 60)
            task = host.kill_mid_task(self.stage.celery, 60)
        killed_at, killed_date = time.monotonic(), time.time()
        source = self.hls.playlist(f"/hls/{self.stream_id}/source/index.m3u8")
        newest = source.media_sequence + len(source.segments) - 1
        outcome = self._played_past("worker SIGKILL", killed_at, killed_date)
        outcome.rungs_relisted_seconds = self._rungs_relisted(rungs, newest + 1, killed_at)
        outcome.task = task
        return self._record(outcome, stalled)

    def drop_within_grace(self) -> FaultOutcome:
        """The publisher's connection drops and it comes back inside the grace window."""
        stalled = self._stall_totals()
        self.publisher.drop()
        time.sleep(self.stage.grace_seconds / 3)
        self.publisher.start()
        return self._after("publisher back within grace", stalled)

    def drop_past_grace(self) -> FaultOutcome:
        """The publisher drops and comes back once its session has ended: a new session."""
        stalled = self._stall_totals()
        self.publisher.drop()
        deadline = time.monotonic() + self.stage.grace_seconds + 60
        while self._latest_session_status() != "ended":
            if time.monotonic() > deadline:
                raise TimeoutError("the session did not end after the grace window")
            time.sleep(POLL_SECONDS)
        time.sleep(1)
        self.publisher.start()
        return self._after("publisher back after grace (new session)", stalled)

    def _after(self, fault: str, stalled: dict[str, float]) -> FaultOutcome:
        outcome = self._played_past(fault, time.monotonic(), time.time())
        return self._record(outcome, stalled)

    def _played_past(self, fault: str, at: float, fault_date: float) -> FaultOutcome:
        moment = fault_date + self.stage.advance_seconds
        stats = self.players.wait_played_past(moment, self.stage.advance_timeout)
        return FaultOutcome(
            fault,
            at,
            advanced={p.name: bool(p.playing_date and p.playing_date > moment) for p in stats},
            latency_seconds={p.name: p.latency_seconds for p in stats},
        )

    def _stall_totals(self) -> dict[str, float]:
        return {player.name: player.stall_seconds for player in self.players.stats()}

    def _record(self, outcome: FaultOutcome, stalled_before: dict[str, float]) -> FaultOutcome:
        """File the outcome with when it happened and the stall time it cost each player."""
        outcome.at_seconds -= self.started
        now = self._stall_totals()
        outcome.stall_seconds = {name: now[name] - stalled_before[name] for name in now}
        self.outcomes.append(outcome)
        return outcome

    def _rungs(self, timeout: float) -> list[str]:
        """The rungs' playlist URLs, once the master lists any."""
        deadline = time.monotonic() + timeout
        while True:
            variants = self.hls.playlist(self.master_path).playlists
            rungs = [v.absolute_uri for v in variants if not v.uri.startswith("source/")]
            if rungs:
                return rungs
            if time.monotonic() > deadline:
                raise TimeoutError(f"the master listed no rung in {timeout} s")
            time.sleep(self.hls.poll_seconds)

    def _rungs_relisted(self, rungs: list[str], from_msn: int, killed_at: float) -> float | None:
        """Seconds from the kill until every rung had listed media from `from_msn` on (as the
        watch saw it, to its poll interval); None if not within the relist timeout."""
        deadline = killed_at + self.stage.relist_timeout
        while True:
            seen = [self.hls.checker.first_media_at(rung, from_msn) for rung in rungs]
            if all(at is not None for at in seen):
                return max(0.0, max(seen) - killed_at)
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_SECONDS)

    def _latest_session_status(self) -> str | None:
        response = self.api.get(f"/api/v1/streams/{self.stream_id}/sessions")
        response.raise_for_status()
        items = response.json()["items"]
        return items[0]["status"] if items else None
