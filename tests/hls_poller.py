"""The HLS client of the end-to-end tests: every playlist it fetches goes through the checker.

A master brings its variants' playlists along (each checked, and compared with the others);
a media playlist brings every segment and init section it lists, fetched once each, as a
player would. `watch()` keeps polling a playlist in a thread, so rules over time (a new
segment every 1.5 x target, nothing changes after ENDLIST...) see the whole live phase, not
only the moments a test happens to look. Requests carry an Origin and accept gzip, like a
browser player's on another site.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urljoin

import httpx
import m3u8

from tests.hls_checker import Fetch, HlsChecker, Listing

ORIGIN = "https://player.example"
POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 30


class CheckedHls:
    """Fetches HLS from `base_url` and shows every answer to one `HlsChecker`."""

    def __init__(self, base_url: str, poll_seconds: float = POLL_SECONDS) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.poll_seconds = poll_seconds
        self.checker = HlsChecker()
        self._client = self._new_client()
        self._fetched: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> CheckedHls:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        return urljoin(self.base_url, path.lstrip("/"))

    def get(self, path: str) -> httpx.Response:
        """GET a playlist (path or URL), check it and what it lists; the response as is."""
        return self._playlist(self._client, self.url(path))

    def playlist(self, path: str) -> m3u8.M3U8:
        """A playlist that must answer 200, parsed."""
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return m3u8.loads(response.text, uri=self.url(path))

    @contextmanager
    def watch(self, path: str) -> Iterator[None]:
        """Poll `path` (and everything it lists) every `poll_seconds` while the block runs."""
        stop = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(
            target=self._poll, args=(self.url(path), stop, failures), daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(TIMEOUT_SECONDS + 5)
        if failures:
            raise failures[0]

    def assert_clean(self) -> None:
        violations = self.checker.violations
        assert not violations, (
            f"{len(violations)} HLS rule violation(s) (rule ids: tests/hls_checker.py RULES):\n"
            + self.checker.report()
        )

    def _poll(self, url: str, stop: threading.Event, failures: list[BaseException]) -> None:
        try:
            with self._new_client() as client:
                while not stop.is_set():
                    # A transport error is noted by the checker where a rule covers it.
                    with suppress(httpx.TransportError):
                        self._playlist(client, url)
                    stop.wait(self.poll_seconds)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)

    def _new_client(self) -> httpx.Client:
        # httpx asks for gzip and undoes it; the checker reads Content-Encoding as sent.
        return httpx.Client(headers={"Origin": ORIGIN}, timeout=TIMEOUT_SECONDS)

    def _fetch(
        self, client: httpx.Client, url: str, keep_body: bool = True
    ) -> tuple[Fetch, httpx.Response | None]:
        """The exchange as the checker sees it, and the response (None: no answer at all)."""
        request = client.build_request("GET", url)
        asked = {k.lower(): v for k, v in request.headers.items()}
        sent = time.monotonic()
        try:
            response = client.send(request)
        except httpx.TransportError as exc:
            return Fetch(url, 0, {}, b"", sent, time.monotonic(), asked, repr(exc)), None
        fetch = Fetch(
            url=url,
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=response.content if keep_body else b"",
            sent_at=sent,
            received_at=time.monotonic(),
            request_headers=asked,
        )
        return fetch, response

    def _playlist(self, client: httpx.Client, url: str) -> httpx.Response:
        fetch, response = self._fetch(client, url)
        listing = self.checker.playlist(fetch)
        if response is None:
            raise httpx.TransportError(f"GET {url}: {fetch.error}")
        self._follow(client, listing)
        return response

    def _follow(self, client: httpx.Client, listing: Listing) -> None:
        if listing.kind == "master":
            for url in listing.urls:
                with suppress(httpx.TransportError):  # noted: a listed playlist must answer
                    self._playlist(client, url)
            return
        for url in listing.urls:
            with self._lock:
                if url in self._fetched:
                    continue
                self._fetched.add(url)
            fetch, _ = self._fetch(client, url, keep_body=False)
            self.checker.media_object(fetch)
