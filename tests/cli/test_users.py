"""`repic users create-admin`: never resets a password, reads it without a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()
PASSWORD = "correct horse battery"


@pytest.fixture
def cli_settings(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    monkeypatch.delenv("REPIC_ADMIN_PASSWORD", raising=False)
    return settings


def _user(settings, name: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.models import User
    from app.wiring import build_container

    container = build_container(settings)
    try:
        with container.session_factory() as session:
            return session.scalar(select(User).where(User.username == name))
    finally:
        container.close()


def _register(settings, name: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    from app.services.users import register
    from app.wiring import build_container

    container = build_container(settings)
    try:
        with container.session_factory() as session:
            register(session, name, password)
    finally:
        container.close()


def _password_works(settings, name: str, password: str) -> bool:  # type: ignore[no-untyped-def]
    from app.security import verify_password

    return verify_password(_user(settings, name).password_hash, password)


def test_create_admin_refuses_an_existing_user(cli_settings) -> None:  # type: ignore[no-untyped-def]
    _register(cli_settings, "anya")
    r = runner.invoke(app, ["users", "create-admin", "anya", "--password", "another password"])
    assert r.exit_code == 2 and "--promote" in r.output
    assert _password_works(cli_settings, "anya", PASSWORD)
    assert _user(cli_settings, "anya").is_admin is False


def test_promote_makes_an_admin_and_keeps_the_password(cli_settings) -> None:  # type: ignore[no-untyped-def]
    _register(cli_settings, "anya")
    r = runner.invoke(app, ["users", "create-admin", "anya", "--promote"])
    assert r.exit_code == 0, r.output
    assert _user(cli_settings, "anya").is_admin is True
    assert _password_works(cli_settings, "anya", PASSWORD)


def test_promote_refuses_a_password(cli_settings) -> None:  # type: ignore[no-untyped-def]
    _register(cli_settings, "anya")
    r = runner.invoke(app, ["users", "create-admin", "anya", "--promote", "--password", "x" * 12])
    assert r.exit_code == 2 and "keeps" in r.output
    assert _password_works(cli_settings, "anya", PASSWORD)


def test_promote_of_an_unknown_user_fails(cli_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "nobody", "--promote"])
    assert r.exit_code == 2 and "no user named 'nobody'" in r.output


def test_the_password_can_come_from_a_file(cli_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "admin-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    r = runner.invoke(app, ["users", "create-admin", "root", "--password-file", str(secret)])
    assert r.exit_code == 0, r.output
    assert _password_works(cli_settings, "root", PASSWORD)


def test_an_unreadable_password_file_fails_clearly(cli_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "root", "--password-file",
                            str(tmp_path / "missing")])
    assert r.exit_code == 2 and "cannot read --password-file" in r.output
    assert _user(cli_settings, "root") is None


def test_the_password_can_come_from_the_environment(cli_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "root"],
                      env={"REPIC_ADMIN_PASSWORD": PASSWORD})
    assert r.exit_code == 0, r.output
    assert _password_works(cli_settings, "root", PASSWORD)


def test_without_a_password_or_a_terminal_it_fails_clearly(cli_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "root"])  # CliRunner's stdin is no terminal
    assert r.exit_code == 2
    assert "--password-file" in r.output and "REPIC_ADMIN_PASSWORD" in r.output
    assert _user(cli_settings, "root") is None


def test_on_a_terminal_it_asks_twice(cli_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("app.cli.users.stdin_is_terminal", lambda: True)
    r = runner.invoke(app, ["users", "create-admin", "root"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert _password_works(cli_settings, "root", PASSWORD)
