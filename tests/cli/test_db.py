"""`repic db`: an unreachable database is one line naming REPIC_DATABASE__URL, not a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.utils.server import free_port

runner = CliRunner()
pytestmark = pytest.mark.nodb


@pytest.fixture
def unreachable(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    from app.settings import Settings

    url = f"postgresql+psycopg://repic:db-pass-123@127.0.0.1:{free_port()}/repic"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database={"url": url}, storage={"data_dir": tmp_path}
    )
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


def _one_line_naming_the_variable(output: str) -> bool:
    lines = output.strip().splitlines()
    return len(lines) == 1 and "REPIC_DATABASE__URL" in lines[0] and "db-pass-123" not in output


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"]])
def test_an_unreachable_database_is_one_line(unreachable, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, command)
    assert r.exit_code == 2 and _one_line_naming_the_variable(r.output), r.output


def test_commands_that_open_the_database_say_so_in_one_line(unreachable) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "root", "--password", "x" * 12])
    assert r.exit_code == 2 and _one_line_naming_the_variable(r.output), r.output
