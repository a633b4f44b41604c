"""Fixtures of the fault tests: each test runs a stack of its own (tests/fault_stack.py), so
a restarted store is that test's alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import make_source


@pytest.fixture(scope="session")
def source_30s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 480p30 H.264 with B-frames and AAC, 2 s GOP: a publish long enough to fault
    in the middle of, with a 360p rung below it."""
    return make_source(
        tmp_path_factory.mktemp("fault-media") / "src480-30s.flv", seconds=30, size="854x480"
    )
