"""Library exports on a real database: the zip (photos, sidecars, manifest), JSON, CSV, and
sidecars next to imported originals; XMP read back with exiftool."""

from __future__ import annotations

import csv
import doctest
import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.db import make_engine, make_session_factory
from app.errors import NotFound
from app.models import Concept, LibraryPhoto, LibraryPhotoConcept, User
from app.services import library_export
from app.services.library_export import (
    CSV_COLUMNS,
    MANIFEST,
    LibraryExportService,
    csv_export,
    json_export,
    select_photos,
)
from app.services.library_search import PhotoQuery
from app.services.xmp import EXIFTOOL_MISSING, ExifToolMissing, SidecarNaming, XmpMode
from app.storage import ImageStore, validate_image
from tests.utils.images import make_image

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason=f"{EXIFTOOL_MISSING} (scripts/test-services.sh installs it)",
)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    engine = make_engine(db_url)
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data" / "images")


def owner(session: Session, name: str) -> User:
    user = User(username=name, password_hash="x")
    session.add(user)
    session.flush()
    return user


def add_photo(
    session: Session,
    store: ImageStore,
    user: User,
    filename: str,
    *,
    album: str = "",
    caption: str = "",
    concepts: tuple[tuple[Concept | str, float | None, list[int] | None], ...] = (),
    color: tuple[int, int, int] = (90, 120, 150),
    source: Path | None = None,
) -> LibraryPhoto:
    data = make_image(size=(200, 100), color=color, fmt="JPEG")
    if source is not None:
        source.write_bytes(data)
    image = validate_image(data, filename, "", max_bytes=10**7, max_pixels=10**8)
    path, _ = store.put(image)
    photo = LibraryPhoto(
        owner_id=user.id, sha256=hashlib.sha256(data).hexdigest(), image_sha256=image.sha256,
        path=path, original_filename=filename, album=album, format=image.format,
        bytes=len(data), width=200, height=100, caption_text=caption,
        source_path=str(source) if source else None,
    )
    session.add(photo)
    session.flush()
    for concept, score, box in concepts:
        is_row = isinstance(concept, Concept)
        session.add(LibraryPhotoConcept(
            photo_id=photo.id, owner_id=user.id,
            concept_id=concept.id if isinstance(concept, Concept) else None,
            name=concept.name if isinstance(concept, Concept) else concept,
            score=score, box=box, pinned=not is_row,
        ))
    session.commit()
    return photo


@pytest.fixture
def library(session: Session, store: ImageStore) -> User:
    """anya's library: two albums, a person and a dog, a name used twice in one album."""
    anya = owner(session, "anya")
    kid = Concept(owner_id=anya.id, name="mia", category="little girl")
    dog = Concept(owner_id=anya.id, name="bo", category="dog")
    session.add_all([kid, dog])
    session.flush()
    add_photo(session, store, anya, "IMG_1.jpg", album="2024/Summer",
              caption="<bo> runs to <mia> on the beach",
              concepts=((dog, 0.91, [20, 10, 60, 50]), (kid, 0.83, [100, 0, 200, 100])))
    add_photo(session, store, anya, "IMG_1.jpg", album="2024/Summer", color=(1, 2, 3),
              caption="=HYPERLINK(\"x\") <bo>", concepts=((dog, 0.7, None),))
    add_photo(session, store, anya, "IMG_9.heic", color=(5, 6, 7))  # stored as a JPEG copy
    return anya


def read_zip(chunks: Iterator[bytes]) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(chunks)))


def exiftool_json(path: Path) -> dict[str, Any]:
    out = subprocess.run(["exiftool", "-j", "-struct", "-G1", "-XMP:all", str(path)],
                         capture_output=True, check=True, text=True).stdout
    return dict(json.loads(out)[0])


@pytest.mark.nodb
def test_doctests_pass() -> None:
    assert doctest.testmod(library_export).failed == 0


@needs_exiftool
def test_zip_holds_photos_sidecars_and_a_manifest(
    session: Session, store: ImageStore, library: User, tmp_path: Path
) -> None:
    photos = select_photos(session, library, PhotoQuery(album="2024"))
    stored = {p.path: hashlib.sha256(store.absolute(p.path).read_bytes()).hexdigest()
              for p in photos}
    archive = read_zip(LibraryExportService(store).zip_stream(photos))
    assert sorted(archive.namelist()) == [
        "2024/Summer/IMG_1 (2).jpg", "2024/Summer/IMG_1 (2).jpg.xmp",
        "2024/Summer/IMG_1.jpg", "2024/Summer/IMG_1.jpg.xmp", MANIFEST,
    ]
    manifest = json.loads(archive.read(MANIFEST))
    assert manifest["count"] == 2
    assert {p["file"] for p in manifest["photos"]} == {"2024/Summer/IMG_1.jpg",
                                                       "2024/Summer/IMG_1 (2).jpg"}
    archive.extractall(tmp_path / "out")
    first = next(p for p in manifest["photos"] if p["caption"].startswith("<bo> runs"))
    tags = exiftool_json(tmp_path / "out" / first["sidecar"])
    assert tags["XMP-dc:Description"] == "bo runs to mia on the beach"
    assert tags["XMP-dc:Subject"] == ["bo", "mia"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["RePIC|bo", "RePIC|mia"]
    assert tags["XMP-iptcExt:PersonInImage"] == ["mia"]  # "little girl" is a person
    kinds = {r["Name"]: r["Type"] for r in tags["XMP-mwg-rs:RegionInfo"]["RegionList"]}
    assert kinds == {"bo": "Pet", "mia": "Face"}
    # The stored originals are untouched, and the zip holds them byte for byte.
    for path, digest in stored.items():
        assert hashlib.sha256(store.absolute(path).read_bytes()).hexdigest() == digest
    assert hashlib.sha256(archive.read(first["file"])).hexdigest() in stored.values()


@needs_exiftool
def test_zip_with_embedded_xmp_and_lightroom_names(
    session: Session, store: ImageStore, library: User, tmp_path: Path
) -> None:
    photos = select_photos(session, library)
    archive = read_zip(LibraryExportService(store).zip_stream(
        photos, XmpMode.EMBEDDED, SidecarNaming.REPLACED))
    names = archive.namelist()
    assert not any(n.endswith(".xmp") for n in names)
    # The photo with no caption yet is exported as it is, and the manifest says why.
    manifest = {p["file"]: p for p in json.loads(archive.read(MANIFEST))["photos"]}
    assert manifest["IMG_9.jpg"]["note"].startswith("not captioned")
    archive.extract("2024/Summer/IMG_1.jpg", tmp_path)
    tags = exiftool_json(tmp_path / "2024/Summer/IMG_1.jpg")
    assert tags["XMP-dc:Subject"] == ["bo", "mia"]


def test_json_export_has_every_field(session: Session, library: User) -> None:
    body = json.loads(json_export(select_photos(session, library, PhotoQuery(album="2024"))))
    assert body["count"] == 2
    photo = next(p for p in body["photos"] if p["caption"].startswith("<bo> runs"))
    assert set(photo) == {"id", "album", "filename", "captured_at", "captioned_at", "caption",
                          "width", "height", "model_version_id", "concepts"}
    assert photo["album"] == "2024/Summer" and photo["filename"] == "IMG_1.jpg"
    assert photo["concepts"] == [
        {"name": "bo", "kind": "animal", "score": 0.91, "box": [20, 10, 60, 50],
         "pinned": False},
        {"name": "mia", "kind": "person", "score": 0.83, "box": [100, 0, 200, 100],
         "pinned": False},
    ]


def test_csv_export_header_rows_and_formula_guard(session: Session, library: User) -> None:
    data = csv_export(select_photos(session, library))
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 4
    by_caption = {r[5]: dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]}
    first = by_caption["<bo> runs to <mia> on the beach"]
    assert first["concepts"] == "bo; mia"
    assert json.loads(first["concepts_json"])[1]["box"] == [100, 0, 200, 100]
    assert "'=HYPERLINK(\"x\") <bo>" in by_caption  # a spreadsheet shows it, never runs it


def test_another_users_photos_are_never_exported(
    session: Session, store: ImageStore, library: User
) -> None:
    other = owner(session, "bob")
    theirs = add_photo(session, store, other, "secret.jpg", album="2024/Summer",
                       caption="bob's photo")
    mine = select_photos(session, library, PhotoQuery(album="2024/Summer"))
    assert theirs.id not in {p.id for p in mine}
    with pytest.raises(NotFound):
        select_photos(session, library, photo_ids=[theirs.id])
    with pytest.raises(NotFound, match="album 'nope'"):
        select_photos(session, library, PhotoQuery(album="nope"))


def test_missing_exiftool_is_refused_before_any_byte(
    session: Session, store: ImageStore, library: User
) -> None:
    service = LibraryExportService(store, exiftool="no-such-exiftool")
    with pytest.raises(ExifToolMissing, match="apt install libimage-exiftool-perl"):
        service.check_exiftool()
    with pytest.raises(ExifToolMissing):
        next(iter(service.zip_stream(select_photos(session, library))))


@needs_exiftool
def test_sidecars_go_next_to_imported_originals(
    session: Session, store: ImageStore, tmp_path: Path
) -> None:
    folder = tmp_path / "Pictures" / "odd 'name' $(x)"
    folder.mkdir(parents=True)
    anya = owner(session, "anya")
    kept = add_photo(session, store, anya, "a.jpg", caption="<bo> naps",
                     concepts=(("bo", None, [10, 10, 50, 50]),), source=folder / "a.jpg")
    changed = add_photo(session, store, anya, "b.jpg", caption="<bo>", color=(9, 9, 9),
                        concepts=(("bo", None, None),), source=folder / "b.jpg")
    (folder / "b.jpg").write_bytes(make_image(size=(10, 10)))  # edited since the import
    uploaded = add_photo(session, store, anya, "c.jpg", caption="<bo>", color=(7, 7, 7))
    before = (folder / "a.jpg").read_bytes()

    results = {r.photo_id: r for r in LibraryExportService(store).write_sidecars(
        select_photos(session, anya), SidecarNaming.REPLACED)}

    assert results[kept.id].sidecar == str(folder / "a.xmp")
    assert exiftool_json(folder / "a.xmp")["XMP-dc:Description"] == "bo naps"
    assert (folder / "a.jpg").read_bytes() == before
    assert "changed" in results[changed.id].skipped and not (folder / "b.xmp").exists()
    assert "browser" in results[uploaded.id].skipped
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a.xmp", "b.jpg"]
