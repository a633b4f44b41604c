"""The ingest raises its open-file soft limit to the hard limit at start (every RTMP client
is a file descriptor). Run in a child process whose soft limit is lowered first, so the
test's own process keeps its limits."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from tests.services import REPO_ROOT

CHILD = """
import resource
from ingest.service import raise_open_file_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
returned = raise_open_file_limit()
print(returned, *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit {hard} leaves nothing to raise to")
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.split() == [str(hard), str(hard), str(hard)]
