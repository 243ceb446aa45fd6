"""``repic library import DIR --user NAME`` and ``repic library caption``: run in-process as
job rows, with a report of what was skipped and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.utils.library import dreambooth_folder, messy_folder

runner = CliRunner()


@pytest.fixture
def cli_settings(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


def _user(settings: Any, name: str = "anya") -> None:
    from app.db import make_engine, make_session_factory, session_scope
    from app.services.users import register

    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        register(session, name, "correct horse battery")
    engine.dispose()


def test_import_reports_what_it_skipped_and_why(cli_settings: Any, tmp_path: Path) -> None:
    _user(cli_settings)
    expected = messy_folder(tmp_path / "card", tmp_path / "elsewhere")
    r = runner.invoke(app, ["library", "import", str(tmp_path / "card"), "--user", "anya"])
    assert r.exit_code == 0, r.output
    assert f"3 photo(s) imported, {len(expected)} skipped" in r.stdout
    assert "link.jpg: symlink (a symbolic link pointing outside the folder" in r.stdout
    again = runner.invoke(app, ["library", "import", str(tmp_path / "card"), "--user", "anya",
                                "--json"])
    report = json.loads(again.stdout)
    assert report["state"] == "succeeded" and report["imported"] == 0
    assert report["skipped_by_reason"]["duplicate"] == 4


def test_import_for_an_unknown_user_fails_in_one_line(cli_settings: Any, tmp_path: Path) -> None:
    r = runner.invoke(app, ["library", "import", str(tmp_path), "--user", "nobody"])
    assert r.exit_code == 2 and "no user named 'nobody'" in r.output


def test_caption_captions_the_imported_library(cli_settings: Any, tmp_path: Path) -> None:
    _user(cli_settings)
    folder = dreambooth_folder(tmp_path / "photos", {"dog": (0,), "cat": (0,)})
    assert runner.invoke(app, ["library", "import", str(folder), "-u", "anya"]).exit_code == 0
    r = runner.invoke(app, ["library", "caption", "-u", "anya", "--album", "cat", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert (result["state"], result["captioned"], result["total"]) == ("succeeded", 1, 1)
    again = runner.invoke(app, ["library", "caption", "-u", "anya", "--new"])
    assert again.exit_code == 0 and "1 photo(s) captioned, 0 failed" in again.stdout
    none_left = runner.invoke(app, ["library", "caption", "-u", "anya", "--new"])
    assert none_left.exit_code == 2 and "No photo needs a caption" in none_left.output


def test_discover_prints_the_suggestions(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.utils.library import color_folder, shades

    # The tiny CLIP's scores are all near 1: two photos make a cluster.
    settings = settings_factory(library={"discovery_min_cluster_size": 2})
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    _user(settings)
    folder = color_folder(tmp_path / "photos", {"pets": shades((30, 190, 40), 3)})
    assert runner.invoke(app, ["library", "import", str(folder), "-u", "anya"]).exit_code == 0
    r = runner.invoke(app, ["library", "discover", "-u", "anya"])
    assert r.exit_code == 0, r.output
    assert "open suggestion(s)" in r.stdout
    assert "photos of something unnamed: pets/0" in r.stdout
    as_json = runner.invoke(app, ["library", "discover", "-u", "anya", "--json"])
    result = json.loads(as_json.stdout)
    assert result["state"] == "succeeded" and result["embedded"] == 0  # all embedded before


def test_discover_in_an_empty_library_says_so(cli_settings: Any) -> None:
    _user(cli_settings)
    r = runner.invoke(app, ["library", "discover", "-u", "anya"])
    assert r.exit_code != 0 and "Your library has no photos yet" in r.output
