"""``GET /api/library/export`` through HTTP: a real folder import, a caption attached the way
the caption job attaches it, the zip/JSON/CSV answers, owner scoping and the 503 without
exiftool."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from app.models import Caption, Concept, LibraryPhoto, User
from app.services.library import FoundConcept, LibraryService
from app.services.library_export import CSV_COLUMNS, MANIFEST, LibraryExportService
from app.services.xmp import EXIFTOOL_MISSING
from tests.utils.library import import_folder, photo_folder
from tests.utils.users import register

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason=f"{EXIFTOOL_MISSING} (scripts/test-services.sh installs it)",
)


def library_of(container: Any, username: str, folder: Path) -> User:
    """``username``'s library imported from ``folder``, its first summer photo captioned with
    their concept ``bo`` (a dog) found in a box."""
    with container.session_factory() as session:
        owner = session.scalar(select(User).where(User.username == username))
        assert owner is not None
        session.expunge(owner)
    import_folder(container, owner, photo_folder(folder))
    with container.session_factory() as session:
        bo = Concept(owner_id=owner.id, name="bo", category="dog")
        session.add(bo)
        photo = session.scalars(
            select(LibraryPhoto).where(LibraryPhoto.owner_id == owner.id,
                                       LibraryPhoto.album == "Trips/2024 Summer")
            .order_by(LibraryPhoto.original_filename)
        ).first()
        assert photo is not None
        caption = Caption(owner_id=owner.id, image_sha256=photo.image_sha256,
                          image_path=photo.path, width=photo.width, height=photo.height,
                          caption="<bo> digs in the sand")
        session.add(caption)
        session.flush()
        LibraryService.attach_caption(
            session, photo, caption, [FoundConcept(bo.id, "bo", 0.9, [8, 6, 40, 30], False)]
        )
        session.commit()
    return owner


@needs_exiftool
def test_zip_export_streams_photos_with_sidecars(
    client: TestClient, container: Any, tmp_path: Path
) -> None:
    headers = register(client, "anya")
    library_of(container, "anya", tmp_path / "pictures")
    r = client.get("/api/library/export", params={"album": "Trips"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="repic-Trips.zip"' in r.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(archive.namelist()) == [
        "Trips/2024 Summer/photo 1.jpg", "Trips/2024 Summer/photo 1.jpg.xmp",
        "Trips/2024 Summer/photo 2.jpg", MANIFEST,
    ]
    archive.extractall(tmp_path / "out")
    sidecar = tmp_path / "out" / "Trips/2024 Summer/photo 1.jpg.xmp"
    tags = json.loads(subprocess.run(
        ["exiftool", "-j", "-struct", "-G1", "-XMP:all", str(sidecar)],
        capture_output=True, check=True, text=True).stdout)[0]
    assert tags["XMP-dc:Description"] == "bo digs in the sand"
    assert tags["XMP-lr:HierarchicalSubject"] == ["RePIC|bo"]
    (region,) = tags["XMP-mwg-rs:RegionInfo"]["RegionList"]
    assert (region["Name"], region["Type"]) == ("bo", "Pet")
    assert region["Area"] == {"X": 0.375, "Y": 0.375, "W": 0.5, "H": 0.5, "Unit": "normalized"}


def test_json_and_csv_exports(client: TestClient, container: Any, tmp_path: Path) -> None:
    headers = register(client, "anya")
    library_of(container, "anya", tmp_path / "pictures")
    r = client.get("/api/library/export", params={"format": "json", "concept": "<bo>"},
                   headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    (photo,) = r.json()["photos"]
    assert photo["filename"] == "photo 1.jpg" and photo["captured_at"].startswith("2024-07-11")
    assert photo["concepts"][0] == {"name": "bo", "kind": "animal", "score": 0.9,
                                    "box": [8, 6, 40, 30], "pinned": False}
    r = client.get("/api/library/export", params={"format": "csv"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 4


def test_export_is_owner_scoped(client: TestClient, container: Any, tmp_path: Path) -> None:
    register(client, "anya")
    library_of(container, "anya", tmp_path / "pictures")
    bob = register(client, "bob")
    r = client.get("/api/library/export", params={"format": "json"}, headers=bob)
    assert r.status_code == 404
    assert r.json()["detail"] == "No library photos to export"
    r = client.get("/api/library/export", params={"format": "json", "album": "Trips"},
                   headers=bob)
    assert r.status_code == 404


def test_bad_parameters_are_422(client: TestClient) -> None:
    headers = register(client, "anya")
    for params in ({"format": "pdf"}, {"xmp": "inside"}, {"naming": "x"}, {"from": "monday"}):
        r = client.get("/api/library/export", params=params, headers=headers)
        assert r.status_code == 422, params


def test_zip_without_exiftool_is_a_503_that_says_what_to_install(
    container: Any, tmp_path: Path
) -> None:
    without = dataclasses.replace(
        container, library_exports=LibraryExportService(container.store, "no-such-exiftool")
    )
    with TestClient(create_app(container=without)) as client:
        headers = register(client, "anya")
        library_of(without, "anya", tmp_path / "pictures")
        r = client.get("/api/library/export", headers=headers)
        assert r.status_code == 503
        assert r.json()["detail"] == EXIFTOOL_MISSING
        # JSON and CSV need no exiftool.
        r = client.get("/api/library/export", params={"format": "csv"}, headers=headers)
        assert r.status_code == 200
