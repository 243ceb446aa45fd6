"""Training records: dataset files in the spec's format, their validation, the data summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.ml.instructions import ICT_SUFFIXES, IOU_SUFFIX, YES_NO_SUFFIX, oct_problem
from tests.trainer.factories import solid
from trainer.records import DatasetError, TrainingRecord, load_records, summarize
from trainer.rewards import compute_reward

pytestmark = pytest.mark.nodb


# --------------------------------------------------------------------------- files


def _write_images(root: Path) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        solid(root / "img" / name, (100, 100, 100))


GOOD = [
    {
        "image": ["img/a.jpg", "img/b.jpg"],
        "problem": oct_problem("Bo", "Is <name> in this image?"),
        "solution": "yes",
        "task": "oct",
    },
    {
        "image": "img/c.jpg",
        "problem": "Locate the dog.",
        "solution": [1, 2, 30, 40],
        "accu_reward_method": "iou",
    },
    {
        "image": ["img/a.jpg", "img/b.jpg"],
        "problem": "caption",
        "solution": "<Bo>",
        "accu_reward_method": "yes_no_name",
    },
    {
        "image": ["img/a.jpg", "img/b.jpg", "img/c.jpg"],
        "problem": "caption",
        "solution": ["<Bo>", "<Ann>"],
        "task": "yes_no_name_multi",
    },
]


def test_json_list_with_relative_paths(tmp_path: Path) -> None:
    _write_images(tmp_path)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(GOOD, indent=2))
    records = load_records(path)
    assert [r.task for r in records] == ["oct", "vlt", "ict", "ict_multi"]
    assert records[0].images == [tmp_path / "img/a.jpg", tmp_path / "img/b.jpg"]
    assert records[1].images == [tmp_path / "img/c.jpg"]
    assert records[1].solution == [1, 2, 30, 40]
    assert records[3].solution == ["<Bo>", "<Ann>"]
    assert records[0].source == "data"


def test_jsonl_with_image_root_and_original_spelling(tmp_path: Path) -> None:
    _write_images(tmp_path / "root")
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n\n")
    records = load_records(path, image_root=tmp_path / "root")
    assert [r.task for r in records] == ["oct", "vlt", "ict", "ict_multi"]
    assert records[2].images[0] == tmp_path / "root/img/a.jpg"
    assert records[2].meta["line"] == 3


BAD = [
    ({"image": "img/a.jpg", "solution": "yes", "task": "oct"}, "field 'problem'"),
    ({"image": "img/a.jpg", "problem": "p", "task": "oct"}, "field 'solution'"),
    ({"problem": "p", "solution": "yes", "task": "oct"}, "field 'image'"),
    ({"image": "img/a.jpg", "problem": "p", "solution": "yes"}, "field 'task'"),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": "yes", "task": "caption"},
        "field 'task': unknown task 'caption'",
    ),
    (
        {"image": "img/missing.jpg", "problem": "p", "solution": "yes", "task": "oct"},
        "field 'image': file not found",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": "maybe", "task": "oct"},
        "field 'solution': expected 'yes' or 'no' for task oct, got 'maybe'",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": [1, 2, 3], "task": "vlt"},
        "field 'solution': expected 4 numbers",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": [1, 2, 3.5, "x"], "task": "vlt"},
        "field 'solution': expected 4 numbers",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": [30, 2, 3, 40], "task": "vlt"},
        "field 'solution': expected a box [x1, y1, x2, y2] with x2>x1",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": "Bo", "task": "ict"},
        "field 'solution': expected a bracketed name",
    ),
    (
        {"image": "img/a.jpg", "problem": "p", "solution": [], "task": "ict_multi"},
        "field 'solution': expected a non-empty list",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_record_names_record_line_and_field(tmp_path: Path, bad: dict, message: str) -> None:
    _write_images(tmp_path)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*GOOD, bad]) + "\n")
    with pytest.raises(DatasetError) as caught:
        load_records(path)
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith("record 4 (line 5): ")
    assert message in caught.value.errors[0]


def test_json_list_errors_name_the_line(tmp_path: Path) -> None:
    _write_images(tmp_path)
    bad = {"image": "img/a.jpg", "problem": "p", "solution": "maybe", "task": "oct"}
    path = tmp_path / "data.json"
    path.write_text(json.dumps([GOOD[0], bad], indent=2))
    with pytest.raises(DatasetError) as caught:
        load_records(path)
    starts = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    expected_line = starts[1]
    assert str(caught.value).startswith(f"record 1 (line {expected_line}): field 'solution'")


def test_every_bad_record_is_reported(tmp_path: Path) -> None:
    _write_images(tmp_path)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r, _ in BAD[:3]) + "\n")
    with pytest.raises(DatasetError) as caught:
        load_records(path)
    assert [e.split(":")[0] for e in caught.value.errors] == [
        "record 0 (line 1)",
        "record 1 (line 2)",
        "record 2 (line 3)",
    ]


# --------------------------------------------------------------------------- original schema

#: Records as the original RePIC code stores them: ``accu_reward_method``, problems without
#: suffixes, images relative to an image root, float or string boxes, verbose yes/no.
ORIGINAL = [
    {
        "image": ["img/a.jpg", "img/b.jpg"],
        "problem": oct_problem("Bo", "Is <name> in this image?"),
        "solution": "Yes, it is.",
        "accu_reward_method": "yes_no",
    },
    {
        "image": ["img/a.jpg", "img/c.jpg"],
        "problem": oct_problem("Bo", "Do you see <name> in the photo?"),
        "solution": "No.",
        "accu_reward_method": "yes_no",
    },
    {
        "image": "img/c.jpg",
        "problem": "Give the dog's bounding box in the image.",
        "solution": [1.5, 2.0, 30.25, 40.0],
        "accu_reward_method": "iou",
    },
    {
        "image": "img/c.jpg",
        "problem": "Mark the dog's bounding box within the image.",
        "solution": "[1, 2, 30, 40]",
        "accu_reward_method": "iou",
    },
]


def test_original_schema_imports_verbose_answers_and_float_boxes(tmp_path: Path) -> None:
    _write_images(tmp_path / "root")
    path = tmp_path / "original.json"
    path.write_text(json.dumps(ORIGINAL))
    records = load_records(path, image_root=tmp_path / "root")
    assert [r.task for r in records] == ["oct", "oct", "vlt", "vlt"]
    assert records[0].images == [tmp_path / "root/img/a.jpg", tmp_path / "root/img/b.jpg"]
    assert [r.problem for r in records] == [r["problem"] for r in ORIGINAL]
    assert records[2].solution == [1.5, 2.0, 30.25, 40.0]
    assert records[3].solution == [1, 2, 30, 40]
    # The rewards read the stored solutions as the original's do.
    for record, raw in zip(records[:2], ORIGINAL[:2], strict=True):
        for answer in ("yes", "no"):
            assert compute_reward("oct", answer, record.solution) == compute_reward(
                "yes_no", answer, raw["solution"]
            )
    assert records[0].solution == "yes" and records[1].solution == "no"


@pytest.mark.parametrize("suffix", [YES_NO_SUFFIX, IOU_SUFFIX, *ICT_SUFFIXES])
def test_a_suffix_baked_into_a_file_is_taken_off_so_it_is_not_doubled(
    tmp_path: Path, suffix: str
) -> None:
    _write_images(tmp_path)
    task, solution = {
        YES_NO_SUFFIX: ("oct", "yes"),
        IOU_SUFFIX: ("vlt", [1, 2, 30, 40]),
    }.get(suffix, ("ict", "<Bo>"))
    path = tmp_path / "baked.jsonl"
    raw = {"image": "img/a.jpg", "problem": "Q?" + suffix, "solution": solution, "task": task}
    path.write_text(json.dumps(raw) + "\n")
    (record,) = load_records(path)
    assert record.problem == "Q?"


# --------------------------------------------------------------------------- summary


def test_summary(built: list[TrainingRecord]) -> None:
    summary = summarize(built)
    assert summary["records"] == 200
    assert summary["per_task"] == {"oct": 88, "vlt": 50, "ict": 52, "ict_multi": 10}
    assert summary["per_source"] == {"concepts": 200}
    images = summary["images"]
    assert images["references"] == sum(len(r.images) for r in built)
    assert images["unreadable"] == 0
    assert images["width"]["min"] <= images["width"]["median"] <= images["width"]["max"]
    assert images["height"]["min"] >= 1
    json.dumps(summary)


def test_doctests_pass() -> None:
    import doctest

    from trainer import records

    result = doctest.testmod(records)
    assert result.attempted and result.failed == 0
