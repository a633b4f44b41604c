"""Real players for the tests and benchmarks: Debian's Chromium driven by Playwright, and a
page on another origin (tests/players/) playing one stream in hls.js and Shaka Player at once.

The page's files and the vendored players (`make player` copies them from the npm packages
pinned in player_demo/package-lock.json) are served by a small HTTP server of the test's own,
on its own port: to the browser that is another origin than the API, as for any site that
embeds a stream, so the players need CORS.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Browser, Page, sync_playwright

from tests.services import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PAGE_DIR = Path(__file__).resolve().parent / "players"
VENDOR_DIR = REPO_ROOT / "player_demo" / "static" / "vendor"
VENDORED = ("hls.min.js", "shaka-player.compiled.js")
POLL_SECONDS = 0.25


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; never a downloaded browser."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: apt-get install chromium (make system-deps)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class _PageFiles(http.server.SimpleHTTPRequestHandler):
    """tests/players/ at the root and the vendored players under /vendor/, nothing else."""

    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0].lstrip("/")
        if name.startswith("vendor/") and name.removeprefix("vendor/") in VENDORED:
            return str(VENDOR_DIR / name.removeprefix("vendor/"))
        return str(PAGE_DIR / Path(name).name)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def page_server() -> Iterator[str]:
    """Serve the two-players page; yields its URL (an origin of its own)."""
    missing = [name for name in VENDORED if not (VENDOR_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not in {VENDOR_DIR}: run `make player`")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/two_players.html"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class PlayerStats:
    """What one player went through, as the page measured it."""

    name: str
    started: bool
    position: float
    playing_date: float | None  # epoch seconds of the media on screen (its PDT)
    latency_seconds: float | None  # how far behind the wall clock that media was, when read
    stall_seconds: float
    longest_stall_seconds: float
    stalls: int
    waiting_events: int
    ended: bool
    manifest_loads: int
    fatal_errors: tuple[str, ...]
    errors: tuple[str, ...]

    @classmethod
    def from_page(cls, raw: dict, read_at: float) -> PlayerStats:
        playing_date = None if raw["playingDateMs"] is None else raw["playingDateMs"] / 1000
        return cls(
            name=raw["name"],
            started=raw["started"],
            position=raw["position"],
            playing_date=playing_date,
            latency_seconds=None if playing_date is None else read_at - playing_date,
            stall_seconds=raw["stallMs"] / 1000,
            longest_stall_seconds=raw["longestStallMs"] / 1000,
            stalls=raw["stalls"],
            waiting_events=raw["waitingEvents"],
            ended=raw["ended"],
            manifest_loads=raw["manifestLoads"],
            fatal_errors=tuple(raw["fatalErrors"]),
            errors=tuple(raw["errors"]),
        )

    def summary(self) -> dict[str, object]:
        return {
            "stall_s": round(self.stall_seconds, 2),
            "longest_stall_s": round(self.longest_stall_seconds, 2),
            "stalls": self.stalls,
            "fatal_errors": list(self.fatal_errors),
            "manifest_loads": self.manifest_loads,
            "position_s": round(self.position, 2),
            "latency_s": None if self.latency_seconds is None else round(self.latency_seconds, 1),
        }


class TwoPlayers:
    """The page in a browser tab: both players on one stream URL, loaded once."""

    def __init__(self, browser: Browser, page_url: str) -> None:
        self.page_url = page_url
        self.context = browser.new_context(viewport={"width": 1100, "height": 500})
        self.page: Page = self.context.new_page()
        self.navigations = 0
        self.page.on("framenavigated", self._navigated)

    def _navigated(self, frame: object) -> None:
        if frame is self.page.main_frame:
            self.navigations += 1

    def open(self, stream_url: str) -> None:
        self.page.goto(f"{self.page_url}?src={quote(stream_url, safe='')}")

    def close(self) -> None:
        self.context.close()

    def stats(self) -> list[PlayerStats]:
        raw = self.page.evaluate("window.playerStats()")
        read_at = time.time()
        return [PlayerStats.from_page(player, read_at) for player in raw["players"]]

    def page_loads(self) -> int:
        """How often the page itself was loaded (a reload would count twice)."""
        return max(self.navigations, self.page.evaluate("window.playerStats().pageLoads"))

    def wait_started(self, timeout: float) -> dict[str, bool]:
        """Wait until each player plays or has failed for good; returns which play."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            settled = all(p.started or p.fatal_errors for p in stats)
            if settled or time.monotonic() > deadline:
                return {p.name: p.started for p in stats}
            time.sleep(POLL_SECONDS)

    def wait_played_past(self, moment: float, timeout: float) -> list[PlayerStats]:
        """Wait until every player shows media dated (EXT-X-PROGRAM-DATE-TIME) after
        `moment` (epoch seconds), i.e. played on into what was made after it, or until
        `timeout`; returns the players as they are then."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if all(p.playing_date and p.playing_date > moment for p in stats):
                return stats
            if time.monotonic() > deadline:
                return stats
            time.sleep(POLL_SECONDS)
