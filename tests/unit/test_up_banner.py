"""What `up` prints once ready: the token it generated (DESIGN.md's contract) and where it
is kept, never a token the operator set, and warnings when webhooks would go out unsigned
and when nothing deletes recordings."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings, retention_off_warning
from core.webhooks import unsigned_webhooks_warning
from nebula_live.stack import _banner

TOKEN = "tok-3f9a"


def _settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(data_dir=tmp_path, api_token=TOKEN, **{"recording_retention": "30d", **fields})


def test_a_generated_token_is_printed_with_the_file_that_keeps_it(tmp_path: Path) -> None:
    banner = _banner(_settings(tmp_path), token_in_env=False)
    path = (tmp_path / "api_token").resolve()
    assert f"Admin API token   {TOKEN}  (kept in {path})" in banner
    assert f'-H "Authorization: Bearer {TOKEN}"' in banner


def test_a_token_from_the_environment_is_named_by_its_variable(tmp_path: Path) -> None:
    banner = _banner(_settings(tmp_path), token_in_env=True)
    assert TOKEN not in banner
    assert "Admin API token   in NEBULA_API_TOKEN" in banner
    assert '-H "Authorization: Bearer $NEBULA_API_TOKEN"' in banner


def test_webhooks_without_a_secret_are_warned_of_and_signed_ones_are_not(
    tmp_path: Path,
) -> None:
    unsigned = _settings(tmp_path, webhook_url="http://hooks.example/in")
    signed = _settings(tmp_path, webhook_url="http://hooks.example/in", webhook_secret="s3cret")
    warning = unsigned_webhooks_warning(unsigned)
    assert warning is not None and warning.startswith(
        "NEBULA_WEBHOOK_URL is set but NEBULA_WEBHOOK_SECRET is not"
    )
    assert f"⚠ {warning}" in _banner(unsigned, token_in_env=True)
    assert unsigned_webhooks_warning(signed) is None
    assert unsigned_webhooks_warning(_settings(tmp_path)) is None
    assert "⚠" not in _banner(signed, token_in_env=True)


def test_retention_left_off_is_warned_of_and_a_set_one_is_not(tmp_path: Path) -> None:
    forever = _settings(tmp_path, recording_retention=None)
    warning = retention_off_warning(forever)
    assert warning is not None and warning.startswith("NEBULA_RECORDING_RETENTION is not set")
    assert "kept forever" in warning
    assert f"⚠ {warning}" in _banner(forever, token_in_env=True)
    kept_a_month = _settings(tmp_path)
    assert retention_off_warning(kept_a_month) is None
    assert "⚠" not in _banner(kept_a_month, token_in_env=True)
