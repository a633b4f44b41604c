"""The operational knobs that were module constants are settings now, with the same
defaults; the RTMP limits the shell passes are the sans-IO core's own defaults."""

from __future__ import annotations

import inspect

import pytest

from core.settings import Settings
from ingest.rtmp.connection import ServerConnection
from ingest.rtmp_server import RtmpConnectionHandler

# ServerConnection's argument -> the setting the RTMP shell passes for it.
RTMP_LIMITS = {
    "max_chunk_size": "rtmp_max_chunk_bytes",
    "max_message_size": "rtmp_max_message_bytes",
    "max_chunk_streams": "rtmp_max_chunk_streams",
    "max_pending_bytes": "rtmp_max_pending_bytes",
    "max_receive_buffer": "rtmp_max_receive_buffer_bytes",
    "max_prepublish_amf_size": "rtmp_max_prepublish_amf_bytes",
    "out_chunk_size": "rtmp_out_chunk_bytes",
    "window_ack_size": "rtmp_window_ack_bytes",
}


def test_every_rtmp_limit_has_a_setting_whose_default_is_the_cores() -> None:
    parameters = inspect.signature(ServerConnection).parameters
    assert set(parameters) - {"random_bytes"} == set(RTMP_LIMITS)
    defaults = Settings.model_fields
    for argument, setting in RTMP_LIMITS.items():
        assert defaults[setting].default == parameters[argument].default, setting


def test_the_shell_builds_each_connection_with_every_configured_limit() -> None:
    settings = Settings(
        rtmp_max_chunk_streams=3, rtmp_window_ack_bytes=1234, rtmp_max_receive_buffer_bytes=2**21
    )
    handler = RtmpConnectionHandler(None, settings)  # type: ignore[arg-type]
    assert handler.new_connection.keywords == {
        argument: getattr(settings, setting) for argument, setting in RTMP_LIMITS.items()
    }
    assert handler.new_connection().max_receive_buffer == 2**21


def test_rtmp_limits_that_do_not_fit_together_fail_when_the_ingest_starts() -> None:
    settings = Settings(rtmp_max_receive_buffer_bytes=4096)  # cannot hold a 64 KiB chunk
    with pytest.raises(ValueError, match="max_receive_buffer=4096"):
        RtmpConnectionHandler(None, settings)  # type: ignore[arg-type]


def test_the_knobs_keep_the_values_of_the_constants_they_replace() -> None:
    settings = Settings()
    assert settings.store_attempts == 4
    assert (settings.upload_retries, settings.upload_chunk_seconds) == (3, 20.0)
    assert (settings.idle_timeout_seconds, settings.heartbeat_seconds) == (30.0, 5.0)
    assert (settings.peer_idle_timeout_ms, settings.key_check_timeout_seconds) == (5000, 1.0)
