"""Fixtures of the end-to-end tests: a live stack (tests/live_stack.py) per module, the
checked HLS client, and media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from tests.hls_poller import CheckedHls
from tests.live_stack import LiveStack, running_stack, stack_settings
from tests.media import make_source

# What a test module's stack differs in, unless it sets `STACK_SETTINGS` itself: the stream
# playlists end with the session (no hold), so a finished publish reads whole from the
# stream URL's window.
DEFAULT_STACK_SETTINGS = {"presentation_hold_seconds": 0.0}


@pytest.fixture(scope="module")
def live_stack(
    settings: Settings, celery_worker: None, request: pytest.FixtureRequest
) -> Iterator[LiveStack]:
    """`nebula-live ingest` and `nebula-live api` for one test module, with the module's
    `STACK_SETTINGS`, beside the session's worker (a stream's ladder needs one). One module
    at a time: an ingest sweeps every stream in the database with its own settings, so no
    other one may run beside it (nor under the integration tests, which build rows of
    their own)."""
    changes = getattr(request.module, "STACK_SETTINGS", DEFAULT_STACK_SETTINGS)
    with running_stack(stack_settings(settings, changes)) as stack:
        yield stack


@pytest.fixture
def hls(live_stack: LiveStack) -> Iterator[CheckedHls]:
    """The test's HLS client: it checks every playlist it fetches (tests/hls_checker.py), and
    the test fails on any rule broken."""
    with CheckedHls(live_stack.api_url) as client:
        yield client
    client.assert_clean()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def source_1080p(media_dir: Path) -> Path:
    """12 s of 1080p30 H.264 high with B-frames and AAC, 2 s GOP."""
    return make_source(media_dir / "src1080.flv", seconds=12)
