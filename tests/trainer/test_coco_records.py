"""COCO-style detection / RefCOCO-like JSON -> VLT records, on small files made from the
committed DreamBooth photos (a dog and a cat pasted into one scene, boxes known)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ml.instructions import QUESTION_POOLS, vlt_problem
from tests.utils.images import fixture_photo
from trainer.coco_records import SOURCE, coco_vlt_records, load_coco_refs
from trainer.records import DatasetError

pytestmark = pytest.mark.nodb

#: Where each photo is pasted in the 240x120 scene, as COCO's [x, y, width, height].
DOG_BOX = [10, 20, 100, 80]
CAT_BOX = [130, 10, 96, 96]


def _scene(path: Path, size: tuple[int, int] = (240, 120)) -> Path:
    """A scene holding a DreamBooth dog and cat at DOG_BOX and CAT_BOX."""
    canvas = Image.new("RGB", (240, 120), (90, 110, 90))
    for subject, (x, y, w, h) in (("dog", DOG_BOX), ("cat", CAT_BOX)):
        photo = Image.open(io.BytesIO(fixture_photo(subject, 0))).convert("RGB")
        canvas.paste(photo.resize((w, h)), (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.resize(size).save(path, quality=92)
    return path


def _instances(**extra: Any) -> dict[str, Any]:
    return {
        "images": [{"id": 7, "file_name": "train2014/scene.jpg", "width": 240, "height": 120}],
        "annotations": [
            {"id": 70, "image_id": 7, "bbox": DOG_BOX, "category_id": 18, "iscrowd": 0},
            {"id": 71, "image_id": 7, "bbox": CAT_BOX, "category_id": 17, "iscrowd": 0},
        ],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
        **extra,
    }


REFS = [
    {"ref_id": 1, "ann_id": 70, "image_id": 7, "split": "train",
     "sentences": [{"sent": "dog on the left", "raw": "Dog on the left."},
                   {"sent": "brown puppy", "raw": "brown puppy"}]},
    {"ref_id": 2, "ann_id": 71, "image_id": 7, "split": "val",
     "sentences": [{"sent": "cat right", "raw": "cat right"}]},
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _scene(tmp_path / "coco" / "train2014" / "scene.jpg")
    return tmp_path / "coco"


def _write(tmp_path: Path, data: Any, name: str = "refs.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_each_refcoco_sentence_becomes_a_vlt_record(tmp_path: Path, root: Path) -> None:
    objects = load_coco_refs(_write(tmp_path, _instances(refs=REFS)), root)
    records, skipped = coco_vlt_records(objects)
    assert not skipped
    by_expression = {r.meta["expression"]: r for r in records}
    assert set(by_expression) == {"dog on the left", "brown puppy", "cat right"}
    dog = by_expression["dog on the left"]
    assert dog.task == "vlt" and dog.source == SOURCE and dog.meta["kind"] == "vlt_refcoco"
    assert dog.images == [root / "train2014" / "scene.jpg"]
    assert dog.solution == [10, 20, 110, 100]  # [x, y, w, h] -> [x1, y1, x2, y2]
    assert by_expression["cat right"].solution == [130, 10, 226, 106]
    # The question is one of the paper's VLT pool, the expression in the name's place.
    assert any(dog.problem == vlt_problem("dog on the left", q) for q in QUESTION_POOLS["vlt"])


def test_split_keeps_only_that_splits_refs(tmp_path: Path, root: Path) -> None:
    objects = load_coco_refs(_write(tmp_path, _instances(refs=REFS)), root, split="train")
    records, _ = coco_vlt_records(objects)
    assert {r.meta["expression"] for r in records} == {"dog on the left", "brown puppy"}


def test_with_refs_only_referred_objects_are_data(tmp_path: Path, root: Path) -> None:
    objects = load_coco_refs(_write(tmp_path, _instances(refs=REFS[:1])), root)
    assert [o.object_id for o in objects] == ["70"]


def test_plain_detection_says_the_category_only_when_it_is_unique(
    tmp_path: Path, root: Path
) -> None:
    data = _instances()
    # A second dog: "the dog" would not say which, so neither dog becomes a record.
    data["annotations"].append(
        {"id": 72, "image_id": 7, "bbox": [60, 60, 30, 30], "category_id": 18, "iscrowd": 0})
    data["annotations"].append(
        {"id": 73, "image_id": 7, "bbox": [0, 0, 240, 120], "category_id": 17, "iscrowd": 1})
    records, skipped = coco_vlt_records(load_coco_refs(_write(tmp_path, data), root))
    assert [(r.meta["expression"], r.meta["kind"]) for r in records] == [
        ("the cat", "vlt_coco_category")]
    assert skipped["category not unique in its image"] == 2


def test_boxes_are_rounded_and_clipped_to_the_image(tmp_path: Path, root: Path) -> None:
    data = _instances(refs=REFS)
    data["annotations"][0]["bbox"] = [-4.4, 19.6, 300.2, 80.5]
    records, _ = coco_vlt_records(load_coco_refs(_write(tmp_path, data), root))
    dog = next(r for r in records if r.meta["object_id"] == "70")
    assert dog.solution == [0, 20, 240, 100]


def test_a_resized_copy_of_the_image_gets_its_box_scaled(tmp_path: Path) -> None:
    root = tmp_path / "small"
    _scene(root / "train2014" / "scene.jpg", size=(120, 60))  # half the size the file says
    records, _ = coco_vlt_records(load_coco_refs(_write(tmp_path, _instances(refs=REFS)), root))
    dog = next(r for r in records if r.meta["object_id"] == "70")
    assert dog.solution == [5, 10, 55, 50]


def test_flat_rows_read_too(tmp_path: Path, root: Path) -> None:
    rows = [
        {"file_name": "train2014/scene.jpg", "bbox": CAT_BOX, "expression": "the sleepy cat"},
        {"image": "train2014/scene.jpg", "bbox": DOG_BOX, "sentences": ["left dog", "pup"]},
    ]
    records, _ = coco_vlt_records(load_coco_refs(_write(tmp_path, rows), root))
    assert sorted(r.meta["expression"] for r in records) == ["left dog", "pup", "the sleepy cat"]


def test_a_missing_image_is_an_error_unless_skipped(tmp_path: Path, root: Path) -> None:
    data = _instances(refs=REFS)
    data["images"].append({"id": 8, "file_name": "train2014/gone.jpg"})
    data["annotations"].append(
        {"id": 80, "image_id": 8, "bbox": [1, 1, 5, 5], "category_id": 17})
    data["refs"].append({"ann_id": 80, "sentences": [{"sent": "gone"}]})
    objects = load_coco_refs(_write(tmp_path, data), root)
    with pytest.raises(DatasetError, match="image not found: .*gone.jpg"):
        coco_vlt_records(objects)
    records, skipped = coco_vlt_records(objects, skip_missing=True)
    assert len(records) == 3 and skipped["missing image"] == 1


def test_bad_entries_are_named(tmp_path: Path, root: Path) -> None:
    data = _instances()
    data["annotations"][1]["bbox"] = [1, 2, 3]
    data["annotations"].append({"id": 99, "image_id": 404, "bbox": [1, 1, 2, 2]})
    with pytest.raises(DatasetError) as caught:
        load_coco_refs(_write(tmp_path, data), root)
    assert caught.value.errors == [
        "annotations[1]: field 'bbox': expected [x, y, width, height], got [1, 2, 3]",
        "annotations[2]: image_id 404 is not in 'images'",
    ]


def test_pickle_files_are_not_read(tmp_path: Path, root: Path) -> None:
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x80\x04N.")
    with pytest.raises(DatasetError, match="pickle files are not read"):
        load_coco_refs(path, root)


def test_max_records_keeps_a_seeded_sample(tmp_path: Path, root: Path) -> None:
    objects = load_coco_refs(_write(tmp_path, _instances(refs=REFS)), root)
    first, _ = coco_vlt_records(objects, seed=3, max_records=2)
    again, _ = coco_vlt_records(objects, seed=3, max_records=2)
    assert len(first) == 2 and [r.problem for r in first] == [r.problem for r in again]
