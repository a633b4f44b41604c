"""The API and the batch worker pool (which runs the retention sweep) say at startup, in
their logs, that recordings are kept forever while NEBULA_RECORDING_RETENTION is unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tests.services import free_port, nebula_process, settings_env, wait_for

COMMANDS = {"api": ("api",), "batch worker": ("worker", "--pool", "batch")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_service_started_without_retention_warns_that_recordings_are_kept_forever(
    settings: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    # Nothing answers on this Redis, so the worker takes no task of the other tests'.
    own = settings.model_copy(
        update={
            "recording_retention": None,
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "http_port": free_port(),
        }
    )
    log = tmp_path / "service.log"
    with nebula_process(command[0], settings_env(own), log, *command[1:]):
        wait_for(
            lambda: "WARNING" in log.read_text() and "is kept forever" in log.read_text(),
            90,
            f"the retention warning in {log}",
        )
    line = next(line for line in log.read_text().splitlines() if "is kept forever" in line)
    assert "NEBULA_RECORDING_RETENTION is not set" in line
    assert "WARNING" in line
