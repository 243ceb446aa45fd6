"""Settings read at start: misspelt REPIC_ names are reported, nonsense values refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings, unknown_settings

pytestmark = pytest.mark.nodb


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No REPIC_ setting from the caller's environment leaks into the test."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("REPIC_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_a_misspelt_name_is_reported_with_the_name_it_likely_meant() -> None:
    (warning,) = unknown_settings({"REPIC_DATABASE_URL": "postgresql://db/x"})
    assert "REPIC_DATABASE_URL" in warning
    assert "did you mean REPIC_DATABASE__URL?" in warning


def test_known_names_are_matched_case_insensitively() -> None:
    environ = {
        "repic_database__url": "sqlite://",
        "REPIC_Worker__Max_Attempts": "3",
        "REPIC_PROFILE": "embedded",
        "REPIC_CAPTION": '{"model": "x"}',  # a whole group as JSON is a setting too
        "HOME": "/root",
    }
    assert unknown_settings(environ) == []


def test_names_the_project_reads_outside_the_settings_are_not_reported() -> None:
    environ = {
        "REPIC_ADMIN_PASSWORD": "x",  # repic users create-admin
        "REPIC_ADMIN_TOKEN": "x",  # repic index verify --app
        "REPIC_SECRET_KEY": "x",  # docker-compose .env
        "REPIC_TEST_DATABASE_URL": "x",  # the test suite
    }
    assert unknown_settings(environ) == []


def test_a_name_unlike_any_setting_is_reported_without_a_guess() -> None:
    (warning,) = unknown_settings({"REPIC_ZZZZZZ": "1"})
    assert "REPIC_ZZZZZZ" in warning and "did you mean" not in warning


def test_misspelt_names_in_the_env_file_are_reported(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REPIC_WORKER__MAX_ATTEMTPS=3\n", encoding="utf-8")
    (warning,) = unknown_settings({}, env_file)
    assert "REPIC_WORKER__MAX_ATTEMTPS" in warning and str(env_file) in warning
    assert "did you mean REPIC_WORKER__MAX_ATTEMPTS?" in warning


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPIC_WORKER__MAX_ATTEMPTS", "0"),
        ("REPIC_DATABASE__POOL_SIZE", "-5"),
        ("REPIC_WORKER__HEARTBEAT_S", "0"),
        ("REPIC_RETRIEVAL__K", "0"),
    ],
)
def test_a_nonsense_value_is_refused_naming_its_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    assert str(caught.value).startswith(f"{name}={value}: ")
    assert "\n" not in str(caught.value)


def test_stale_after_must_leave_room_for_missed_heartbeats(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REPIC_WORKER__HEARTBEAT_S", "15")
    clean_env.setenv("REPIC_WORKER__STALE_AFTER_S", "10")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    assert "REPIC_WORKER__STALE_AFTER_S" in message and "REPIC_WORKER__HEARTBEAT_S" in message


def test_every_problem_is_listed_one_per_line(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REPIC_WORKER__MAX_ATTEMPTS", "0")
    clean_env.setenv("REPIC_RETRIEVAL__K", "none")
    with pytest.raises(SettingsError) as caught:
        load_settings(env_file=None)
    lines = str(caught.value).splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "REPIC_RETRIEVAL__K",
        "REPIC_WORKER__MAX_ATTEMPTS",
    ]


def test_sane_values_load(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REPIC_WORKER__MAX_ATTEMPTS", "1")
    assert load_settings(env_file=None).worker.max_attempts == 1
