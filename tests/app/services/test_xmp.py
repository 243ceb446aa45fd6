"""XMP writing, read back with exiftool itself (``exiftool -j -struct -G1``), not our reader."""

from __future__ import annotations

import doctest
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

from app.services import xmp
from app.services.xmp import (
    EXIFTOOL_MISSING,
    ConceptKind,
    ExifToolMissing,
    PhotoMetadata,
    XmpConcept,
    XmpMode,
    XmpWriter,
    find_exiftool,
    replace_file,
    stored_box,
)

pytestmark = pytest.mark.nodb

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None,
    reason=f"{EXIFTOOL_MISSING} (scripts/test-services.sh installs it)",
)

META = PhotoMetadata(
    caption='<bo> naps next to <anya>\non the "sofa" {x}',
    width=200,
    height=100,
    concepts=(
        XmpConcept("bo", ConceptKind.ANIMAL, (20, 10, 60, 50)),
        XmpConcept("anya", ConceptKind.PERSON, (100, 0, 200, 100)),
        XmpConcept("mug", ConceptKind.THING, (0, 0, 200, 100)),  # the whole photo: no region
        XmpConcept("Zoë", ConceptKind.PERSON, None),  # pinned, not localised
    ),
)


def exiftool_json(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["exiftool", "-j", "-struct", "-G1", "-XMP:all", "-Orientation#", "--", str(path)],
        capture_output=True, check=True, text=True,
    ).stdout
    return dict(json.loads(out)[0])


def raw_xmp(path: Path) -> str:
    return subprocess.run(
        ["exiftool", "-b", "-XMP", "--", str(path)], capture_output=True, check=True, text=True
    ).stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photo(path: Path, size: tuple[int, int] = (200, 100), orientation: int = 1) -> Path:
    image = Image.new("RGB", size, (120, 90, 60))
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def regions(tags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    info = tags["XMP-mwg-rs:RegionInfo"]
    return {r["Name"]: r for r in info["RegionList"]}


def test_doctests_pass() -> None:
    assert doctest.testmod(xmp).failed == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_stored_box_undoes_what_exif_transpose_does(orientation: int) -> None:
    stored = Image.new("L", (60, 40), 0)
    stored.paste(255, (5, 8, 20, 30))  # the object, in stored pixels
    stored.getexif()[0x0112] = orientation
    upright = ImageOps.exif_transpose(stored)
    box = upright.getbbox()
    assert box is not None
    assert stored_box(box, upright.width, upright.height, orientation) == (5, 8, 20, 30)


def test_missing_exiftool_is_a_clear_503_message() -> None:
    with pytest.raises(ExifToolMissing, match="apt install libimage-exiftool-perl"):
        find_exiftool("no-such-exiftool-here")


def test_an_exiftool_that_never_answers_is_stopped(tmp_path: Path) -> None:
    # A stand-in for a hung exiftool (a damaged file can make a tool spin): it reads its
    # commands and never answers.
    hung = tmp_path / "exiftool"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    with (
        xmp.ExifTool(str(hung), timeout_s=0.5) as tool,
        pytest.raises(xmp.ExifToolFailed, match="did not answer within"),
    ):
        tool.run(["-ver"])


@needs_exiftool
def test_sidecar_holds_every_field_and_the_photo_is_untouched(tmp_path: Path) -> None:
    original = photo(tmp_path / "IMG_1.jpg")
    before = digest(original)
    with XmpWriter(find_exiftool()) as writer:
        sidecar = writer.sidecar(original, META)
        tags = exiftool_json(sidecar)
        packet = raw_xmp(sidecar)
    assert digest(original) == before
    assert tags["XMP-dc:Description"] == 'bo naps next to anya\non the "sofa" {x}'
    assert "xml:lang='x-default'" in packet
    assert tags["XMP-dc:Subject"] == ["bo", "anya", "mug", "Zoë"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["RePIC|bo", "RePIC|anya", "RePIC|mug",
                                                  "RePIC|Zoë"]
    assert tags["XMP-iptcExt:PersonInImage"] == ["anya", "Zoë"]
    assert tags["XMP-mwg-rs:RegionInfo"]["AppliedToDimensions"] == {
        "W": 200, "H": 100, "Unit": "pixel"}
    found = regions(tags)
    assert set(found) == {"bo", "anya"}  # mug's box is the whole photo, Zoë has none
    assert found["bo"]["Type"] == "Pet"
    assert found["bo"]["Area"] == {"X": 0.2, "Y": 0.3, "W": 0.2, "H": 0.4, "Unit": "normalized"}
    assert found["anya"]["Type"] == "Face"
    assert found["anya"]["Area"] == {"X": 0.75, "Y": 0.5, "W": 0.5, "H": 1, "Unit": "normalized"}


@needs_exiftool
def test_embedded_metadata_goes_into_a_copy(tmp_path: Path) -> None:
    original = photo(tmp_path / "IMG_2.png")
    before = digest(original)
    with XmpWriter(find_exiftool()) as writer:
        written = writer.embedded(original, META)
        tags = exiftool_json(written.photo)
        size = Image.open(written.photo).size
    assert written.mode == XmpMode.EMBEDDED and written.sidecar is None
    assert written.photo != original and digest(original) == before
    assert tags["XMP-dc:Subject"] == ["bo", "anya", "mug", "Zoë"]
    assert set(regions(tags)) == {"bo", "anya"}
    assert size == (200, 100)


@needs_exiftool
def test_a_format_exiftool_cannot_write_gets_a_sidecar_and_a_note(tmp_path: Path) -> None:
    original = photo(tmp_path / "IMG_3.webp")
    with XmpWriter(find_exiftool()) as writer:
        written = writer.embedded(original, META)
        if written.mode == XmpMode.EMBEDDED:  # exiftool 12.58+ writes WebP
            target = written.photo
        else:
            assert written.sidecar is not None and "sidecar" in written.note
            assert written.photo == original
            target = written.sidecar
        assert exiftool_json(target)["XMP-iptcExt:PersonInImage"] == ["anya", "Zoë"]


@needs_exiftool
def test_regions_follow_the_stored_pixels_of_a_rotated_file(tmp_path: Path) -> None:
    # Stored 100 x 200 with Orientation 6: viewers show it upright, 200 x 100 (MWG 2.0 §5.9:
    # regions apply to the stored image).
    original = photo(tmp_path / "portrait.jpg", size=(100, 200), orientation=6)
    meta = PhotoMetadata("<bo>", 200, 100, (XmpConcept("bo", ConceptKind.ANIMAL,
                                                       (20, 10, 60, 50)),))
    with XmpWriter(find_exiftool()) as writer:
        tags = exiftool_json(writer.sidecar(original, meta))
    info = tags["XMP-mwg-rs:RegionInfo"]
    assert info["AppliedToDimensions"] == {"W": 100, "H": 200, "Unit": "pixel"}
    # upright (20,10)-(60,50) is stored (10,140)-(50,180)
    assert info["RegionList"][0]["Area"] == {"X": 0.3, "Y": 0.8, "W": 0.4, "H": 0.2,
                                             "Unit": "normalized"}


@needs_exiftool
def test_rewriting_keeps_other_tools_fields_and_replaces_ours(tmp_path: Path) -> None:
    original = photo(tmp_path / "IMG_4.jpg")
    theirs = tmp_path / "IMG_4.jpg.xmp"
    # A digiKam-like sidecar: the owner's keyword and face region, and our earlier write.
    subprocess.run(
        ["exiftool", "-q", "-o", str(theirs), "-XMP-dc:Subject=holiday", "-XMP-dc:Subject=bo",
         "-XMP-lr:HierarchicalSubject=Places|Beach", "-XMP-lr:HierarchicalSubject=RePIC|bo",
         "-XMP-iptcExt:PersonInImage=Grandma",
         "-XMP-mwg-rs:RegionInfo={AppliedToDimensions={W=200,H=100,Unit=pixel},"
         "RegionList=[{Name=Grandma,Type=Face,Area={X=0.5,Y=0.5,W=0.1,H=0.1,Unit=normalized}},"
         "{Name=bo,Type=Pet,Description=RePIC,"
         "Area={X=0.1,Y=0.1,W=0.1,H=0.1,Unit=normalized}}]}",
         str(original)],
        check=True,
    )
    meta = PhotoMetadata("<anya> at the beach", 200, 100,
                         (XmpConcept("anya", ConceptKind.PERSON, (100, 0, 200, 100)),))
    with XmpWriter(find_exiftool()) as writer:
        tags = exiftool_json(writer.sidecar(original, meta, existing=theirs))
    assert tags["XMP-dc:Subject"] == ["holiday", "anya"]  # bo was ours, and is gone
    assert tags["XMP-lr:HierarchicalSubject"] == ["Places|Beach", "RePIC|anya"]
    assert tags["XMP-iptcExt:PersonInImage"] == ["Grandma", "anya"]
    assert set(regions(tags)) == {"Grandma", "anya"}
    assert regions(tags)["Grandma"]["Area"]["W"] == 0.1


@needs_exiftool
def test_a_write_with_no_regions_left_removes_ours(tmp_path: Path) -> None:
    original = photo(tmp_path / "IMG_5.jpg")
    with XmpWriter(find_exiftool()) as writer:
        first = writer.sidecar(original, META)
        again = writer.sidecar(original, PhotoMetadata("<bo>", 200, 100, (XmpConcept("bo"),)),
                               existing=first)
        tags = exiftool_json(again)
    assert "XMP-mwg-rs:RegionInfo" not in tags
    assert "XMP-iptcExt:PersonInImage" not in tags
    assert tags["XMP-dc:Subject"] == ["bo"]


@needs_exiftool
def test_odd_file_names_are_safe(tmp_path: Path) -> None:
    folder = tmp_path / "a folder; $(rm -rf x)"
    folder.mkdir()
    original = photo(folder / "-o evil\nname 'é' \"q\".jpg")
    target = folder / xmp.sidecar_name(original.name, xmp.SidecarNaming.APPENDED)
    with XmpWriter(find_exiftool()) as writer:
        replace_file(writer.sidecar(original, META), target)
    assert sorted(p.name for p in folder.iterdir()) == sorted([original.name, target.name])
    assert exiftool_json(target)["XMP-dc:Subject"] == ["bo", "anya", "mug", "Zoë"]
