"""The photo library in a real browser, with a real cpu worker and the tiny models: import a
folder of DreamBooth photos (albums from its sub-folders, a skipped file reported), caption
it, then find the photos of one concept by concept and by a word of their captions.

Retrieval keeps one concept per photo here (``k=1``, no threshold): the tiny random CLIP
cannot tell a dog from a cat, but a library photo that *is* one of a concept's reference photos
scores 1.0 with it, so those photos are the ones a concept search must return.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_concepts_flow import register_and_login
from tests.support.celery_worker import start_worker
from tests.utils.library import DREAMBOOTH
from tests.utils.server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(retrieval={"min_score": 0.0, "k": 1})


@pytest.fixture
def live_server(settings: Any) -> Iterator[LiveServer]:
    worker = start_worker(settings, queues=("cpu",))
    try:
        with LiveServer(settings) as server:
            yield server
    finally:
        worker.stop()


def _folder(root: Path) -> Path:
    """Pets/dog/02-04.jpg, Pets/cat/02-04.jpg and a file that is not a photo."""
    for subject in ("dog", "cat"):
        (root / "Pets" / subject).mkdir(parents=True)
        for photo in sorted((DREAMBOOTH / subject).glob("*.jpg")):
            shutil.copy(photo, root / "Pets" / subject / photo.name)
    (root / "Pets" / "notes.txt").write_text("not a photo")
    return root / "Pets"


def _concept(page: Any, name: str, subject: str) -> None:
    page.goto("/concepts/new")
    page.fill("#name", name)
    page.set_input_files("#images", [str(DREAMBOOTH / subject / n) for n in ("02.jpg", "03.jpg")])
    page.click("#save")
    page.wait_for_selector("#concept-name")


def _tiles(page: Any) -> list[str]:
    """The results as "album/file", from the line under each photo of the grid."""
    lines = page.locator("#library-grid li .wrap").all_inner_texts()
    return ["/".join(line.split(" · ")[:2]) for line in lines]


def test_import_caption_and_find_photos_by_concept_and_by_caption_word(
    page: Any, tmp_path: Path
) -> None:
    register_and_login(page)
    _concept(page, "bo", "dog")
    _concept(page, "mia", "cat")

    page.goto("/library")
    page.set_input_files("#library-folder", str(_folder(tmp_path)))
    summary = page.locator("#import-jobs .import-summary")
    summary.wait_for(timeout=120_000)
    assert summary.inner_text() == "6 photo(s) imported, 1 file(s) skipped."
    page.click("#import-jobs details summary")
    assert "Pets/notes.txt: not an image" in page.inner_text("#import-jobs .job-problems")

    page.reload()
    assert "All photos (6)" in page.inner_text("#results-title")
    page.click("#caption-new")
    done = page.locator("#caption-jobs .caption-summary")
    done.wait_for(timeout=180_000)
    assert done.inner_text() == "6 photo(s) captioned."

    # By concept: <bo>'s reference photos are among its results, <mia>'s are not.
    page.goto("/library")
    page.check("#search-concepts input[value='bo']")
    page.click("#search-submit")
    found = _tiles(page)
    assert {"Pets/dog/02.jpg", "Pets/dog/03.jpg"} <= set(found)
    assert not {"Pets/cat/02.jpg", "Pets/cat/03.jpg"} & set(found)
    chips = page.locator("#library-grid li .chip").all_inner_texts()
    assert chips and all(c.startswith("<bo>") for c in chips)

    # By a word of a caption (the tiny model's captions are random tokens: take one).
    first = page.locator("#library-grid li").first
    caption = first.locator("[data-testid=photo-caption]").inner_text()
    words = re.findall(r"\w+", caption)
    assert words, f"the caption {caption!r} has no word to search by"
    photo = first.get_attribute("data-photo-id")
    page.goto("/library")
    page.fill("#search-q", words[0])
    page.click("#search-submit")
    ids = page.locator("#library-grid li").evaluate_all(
        "tiles => tiles.map(t => t.dataset.photoId)")
    assert photo in ids
    for text in page.locator("#library-grid [data-testid=photo-caption]").all_inner_texts():
        assert words[0].lower() in [w.lower() for w in re.findall(r"\w+", text)]

    # XMP sidecars (issue #17 item 4): export <bo>'s photos as a zip with a sidecar each, from
    # the page's own form, and read one back with exiftool.
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed: apt install libimage-exiftool-perl "
                    "(scripts/test-services.sh installs it)")
    page.goto("/library")
    page.check("#search-concepts input[value='bo']")
    page.click("#search-submit")
    page.select_option("#export-format", "zip")
    page.select_option("#export-xmp", "sidecar")
    with page.expect_download() as download:
        page.click("#export-submit")
    archive_path = tmp_path / download.value.suggested_filename
    download.value.save_as(archive_path)
    assert archive_path.name == "repic-library.zip"
    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read("repic-export.json"))
        assert {p["file"] for p in manifest["photos"]} == set(found)
        exported = next(p for p in manifest["photos"] if p["file"] == "Pets/dog/02.jpg")
        assert exported["sidecar"] == "Pets/dog/02.jpg.xmp"
        archive.extractall(tmp_path / "export")
    tags = json.loads(subprocess.run(
        ["exiftool", "-j", "-struct", "-G1", "-XMP:all",
         str(tmp_path / "export" / exported["sidecar"])],
        capture_output=True, check=True, text=True).stdout)[0]
    assert tags["XMP-dc:Subject"] == ["bo"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["RePIC|bo"]
    if exported["caption"].strip():
        assert tags["XMP-dc:Description"] == exported["caption"].replace("<bo>", "bo").strip()
