"""``repic library export`` and ``repic library xmp`` on a folder imported as the CLI imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app
from app.models import Caption, LibraryPhoto, User
from app.services.library import FoundConcept, LibraryService
from app.services.xmp import EXIFTOOL_MISSING
from app.settings import Settings
from tests.utils.library import import_folder, photo_folder

runner = CliRunner()
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason=f"{EXIFTOOL_MISSING} (scripts/test-services.sh installs it)",
)


@pytest.fixture
def cli_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


@pytest.fixture
def imported(cli_settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """anya's library imported from a folder, its top photo captioned; yields the folder."""
    from app.wiring import build_container

    container: Any = build_container(cli_settings)
    try:
        with container.session_factory() as session:
            owner = User(username="anya", password_hash="x")
            session.add(owner)
            session.commit()
            session.expunge(owner)
        folder = photo_folder(tmp_path / "pictures")
        import_folder(container, owner, folder)
        with container.session_factory() as session:
            photo = session.scalars(
                select(LibraryPhoto).where(LibraryPhoto.album == "")
            ).one()
            caption = Caption(owner_id=owner.id, image_sha256=photo.image_sha256,
                              image_path=photo.path, caption="<mia> laughs")
            session.add(caption)
            session.flush()
            LibraryService.attach_caption(
                session, photo, caption, [FoundConcept(None, "mia", None, None, True)]
            )
            session.commit()
        yield folder
    finally:
        container.close()


@needs_exiftool
def test_export_writes_a_zip_and_says_how_many(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "all.zip"
    result = runner.invoke(app, ["library", "export", "--user", "anya", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 photos exported" in result.output
    names = zipfile.ZipFile(out).namelist()
    assert "photo 0.jpg" in names and "photo 0.jpg.xmp" in names
    assert "Trips/2024 Summer/photo 2.jpg" in names
    assert [p.name for p in out.parent.iterdir()] == ["all.zip"]  # no temporary file left


def test_export_format_follows_the_file_name(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "captions.json"
    result = runner.invoke(app, ["library", "export", "-u", "anya", "--album", "Trips",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["count"] == 2


def test_export_refuses_an_unknown_format_and_album(imported: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["library", "export", "-u", "anya", "--out",
                                 str(tmp_path / "x.pdf")])
    assert result.exit_code == 2 and "--format must be one of zip, json, csv" in result.output
    result = runner.invoke(app, ["library", "export", "-u", "anya", "--album", "nope",
                                 "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "No library photos to export in album 'nope'" in result.output
    assert not (tmp_path / "x.csv").exists()


@needs_exiftool
def test_xmp_writes_sidecars_next_to_the_originals(imported: Path) -> None:
    result = runner.invoke(app, ["library", "xmp", "--user", "anya"])
    assert result.exit_code == 0, result.output
    assert "1 sidecars written, 2 skipped" in result.output
    assert "not captioned yet" in result.output
    sidecar = imported / "photo 0.jpg.xmp"
    tags = json.loads(subprocess.run(
        ["exiftool", "-j", "-struct", "-XMP:all", str(sidecar)],
        capture_output=True, check=True, text=True).stdout)[0]
    assert tags["Description"] == "mia laughs" and tags["Subject"] == ["mia"]
