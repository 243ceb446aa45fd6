"""`repic config show`: the effective settings without their secrets; bad settings stop the
command with one line per problem; misspelt names are reported."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()
pytestmark = pytest.mark.nodb


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from app.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database={"url": "postgresql+psycopg://repic:db-pass-123@postgres:5432/repic"},
        auth={"secret_key": "session-secret-456"},
        caption={"openai_api_key": "vllm-key-789"},
        worker={"broker_url": "redis://:redis-pass-000@redis:6379/0"},
        metrics={"token": "metrics-token-111"},
    )
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


@pytest.fixture
def environment_settings() -> Iterator[None]:
    """The CLI reads the real environment (no test settings patched in)."""
    from app.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_config_show_masks_every_secret(secret_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["config", "show"])
    assert r.exit_code == 0, r.output
    for secret in ("db-pass-123", "session-secret-456", "vllm-key-789", "redis-pass-000",
                   "metrics-token-111"):
        assert secret not in r.output


def test_config_show_keeps_what_is_not_secret(secret_settings) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(runner.invoke(app, ["config", "show"]).stdout)
    assert data["database"]["url"] == "postgresql+psycopg://repic:***@postgres:5432/repic"
    assert data["worker"]["broker_url"] == "redis://:***@redis:6379/0"
    assert data["caption"]["openai_api_key"] == "***"
    assert data["caption"]["max_new_tokens"] == secret_settings.caption.max_new_tokens
    assert data["auth"]["token_ttl_days"] == secret_settings.auth.token_ttl_days


def test_an_unset_secret_shows_as_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    data = json.loads(runner.invoke(app, ["config", "show"]).stdout)
    assert data["caption"]["openai_api_key"] == "" and data["metrics"]["token"] == ""


def test_a_nonsense_setting_stops_the_command_in_one_line(environment_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["config", "show"], env={"REPIC_WORKER__MAX_ATTEMPTS": "0"})
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "REPIC_WORKER__MAX_ATTEMPTS=0: Input should be greater than or equal to 1"
    ]


def test_a_misspelt_setting_is_reported(environment_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["config", "show"], env={"REPIC_DATABASE_URL": "sqlite://"})
    assert r.exit_code == 0
    assert "REPIC_DATABASE_URL" in r.stderr and "did you mean REPIC_DATABASE__URL?" in r.stderr
