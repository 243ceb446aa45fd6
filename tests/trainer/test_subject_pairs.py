"""Subjects200K-like folders -> OCT yes/no and ICT records, on small files made from the
committed DreamBooth photos."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.utils.images import fixture_photo
from trainer.records import DatasetError
from trainer.subject_pairs import (
    PAIR_PADDING,
    SOURCE,
    cut_pair,
    load_subject_folders,
    subject_pair_records,
)

pytestmark = pytest.mark.nodb


def _photo(subject: str, index: int, size: int = 96) -> Image.Image:
    return Image.open(io.BytesIO(fixture_photo(subject, index))).convert("RGB").resize(
        (size, size))


def _subject_folder(root: Path, subject: str, meta: dict | None = None) -> Path:
    folder = root / subject
    folder.mkdir(parents=True)
    for index in range(3):
        _photo(subject, index).save(folder / f"{index}.jpg")
    if meta is not None:
        (folder / "subject.json").write_text(json.dumps(meta))
    return folder


def _pair_image(root: Path, stem: str, subject: str, description: dict, side: int = 96) -> Path:
    """A pair image as Subjects200K ships it: two square panels with OminiControl's margin."""
    pad = PAIR_PADDING
    canvas = Image.new("RGB", (2 * side + 4 * pad, side + 2 * pad), (255, 255, 255))
    canvas.paste(_photo(subject, 0, side), (pad, pad))
    canvas.paste(_photo(subject, 1, side), (side + 2 * pad, pad))
    path = root / f"{stem}.jpg"
    canvas.save(path, quality=95)
    (root / f"{stem}.json").write_text(json.dumps({"description": description}))
    return path


def _mean(image: Image.Image) -> list[float]:
    return ImageStat.Stat(image).mean


def test_subject_folders_become_subjects_with_their_metadata(tmp_path: Path) -> None:
    _subject_folder(tmp_path / "in", "dog", {"item": "Corgi puppy", "category": "dog",
                                             "description": "a corgi on the grass"})
    _subject_folder(tmp_path / "in", "cat")
    cat, dog = load_subject_folders(tmp_path / "in", tmp_path / "work")  # by folder name
    assert (dog.name, dog.category, dog.info) == ("corgi_puppy", "dog", "a corgi on the grass")
    assert len(dog.image_paths) == 3 and cat.name == "cat"


def test_a_pair_image_is_cut_into_its_two_views(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _pair_image(source, "row7", "dog", {"item": "dog", "category": "animal",
                                        "description_0": "a dog on a sofa"})
    (subject,) = load_subject_folders(source, tmp_path / "work")
    assert (subject.category, subject.info) == ("animal", "a dog on a sofa")
    first, second = (Image.open(p) for p in subject.image_paths)
    assert first.size == second.size == (96, 96)
    for cut, index in ((first, 0), (second, 1)):
        expected = _mean(_photo("dog", index))
        assert all(abs(a - b) < 6 for a, b in zip(_mean(cut), expected, strict=True))


def test_a_pair_marked_invalid_is_skipped(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _pair_image(source, "good", "dog", {"item": "dog"})
    _pair_image(source, "bad", "cat", {"item": "cat", "description_valid": False})
    assert [s.concept_id for s in load_subject_folders(source, tmp_path / "work")] == ["good"]


def test_a_folder_without_two_views_of_a_subject_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in" / "dog").mkdir(parents=True)
    _photo("dog", 0).save(tmp_path / "in" / "dog" / "0.jpg")
    with pytest.raises(DatasetError, match="no subject with two photos"):
        load_subject_folders(tmp_path / "in", tmp_path / "work")


def test_an_image_that_is_no_pair_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (40, 40)).save(tmp_path / "square.png")
    with pytest.raises(DatasetError, match="not two square panels"):
        cut_pair(tmp_path / "square.png", tmp_path / "out")


def test_records_are_oct_yes_no_and_ict_in_the_papers_ratio(tmp_path: Path) -> None:
    for subject in ("dog", "cat"):
        _subject_folder(tmp_path / "in", subject)
    subjects = load_subject_folders(tmp_path / "in", tmp_path / "work")
    records = subject_pair_records(subjects, tmp_path / "out", 70, seed=1)
    assert Counter(r.task for r in records) == {"oct": 44, "ict": 26}
    assert {r.source for r in records} == {SOURCE}
    by_subject = {s.concept_id: set(s.image_paths) for s in subjects}

    def subject_of(path: Path | str) -> str:
        return next(k for k, v in by_subject.items() if Path(path) in v)

    for record in records:
        ref, query = record.images
        assert ref != query
        same = subject_of(ref) == subject_of(query)
        if record.task == "oct":
            assert record.solution == ("yes" if same else "no")
        else:
            assert same and record.solution == "<{name0}>"
    assert {r.solution for r in records if r.task == "oct"} == {"yes", "no"}
