"""`repic data preview`: what the model is given for each record of a dataset file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.ml.instructions import (
    ICT_SUFFIXES,
    IOU_SUFFIX,
    YES_NO_SUFFIX,
    ict_multi_problem,
    ict_single_problem,
    oct_problem,
)
from tests.trainer.factories import solid
from trainer.model_view import model_view_size, scale_box

pytestmark = pytest.mark.nodb

runner = CliRunner()

#: One record per method, in the original code's schema (no suffixes in the problems).
ORIGINAL = [
    {
        "image": ["refs/a.jpg", "query/b.jpg"],
        "problem": oct_problem("Bo", "Is <name> in this image?"),
        "solution": "Yes, it is.",
        "accu_reward_method": "yes_no",
    },
    {
        "image": "query/b.jpg",
        "problem": "Give the red square's bounding box in the image.",
        "solution": [8.0, 6.0, 40.0, 30.0],
        "accu_reward_method": "iou",
    },
    {
        "image": ["refs/a.jpg", "query/b.jpg"],
        "problem": ict_single_problem("Bo", "Give a caption of the image."),
        "solution": "<Bo>",
        "accu_reward_method": "yes_no_name",
    },
    {
        "image": ["refs/a.jpg", "refs/c.jpg", "query/b.jpg"],
        "problem": ict_multi_problem(["Bo", "Ann"], "Describe the image in detail.", 1),
        "solution": ["<Bo>", "<Ann>"],
        "accu_reward_method": "yes_no_name_multi",
    },
]


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    for rel, colour in (("refs/a.jpg", (200, 0, 0)), ("refs/c.jpg", (0, 0, 200))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        solid(root / rel, colour)
    (root / "query").mkdir()
    solid(root / "query/b.jpg", (0, 200, 0))
    path = tmp_path / "train.json"
    path.write_text(json.dumps(ORIGINAL, indent=2))
    return path, root


def _preview(*args: str) -> list[dict]:
    result = runner.invoke(app, ["data", "preview", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_original_schema_prints_what_the_original_code_would_prompt(
    dataset: tuple[Path, Path],
) -> None:
    path, root = dataset
    rows = _preview(str(path), "--image-root", str(root))
    assert [set(r) for r in rows] == [{"task", "images", "text", "solution"}] * 4
    assert [(r["task"], r["images"]) for r in rows] == [
        ("oct", 2),
        ("vlt", 1),
        ("ict", 2),
        ("ict_multi", 3),
    ]
    assert rows[0]["text"] == ORIGINAL[0]["problem"] + YES_NO_SUFFIX
    assert rows[1]["text"] == ORIGINAL[1]["problem"] + IOU_SUFFIX
    for row, raw in zip(rows[2:], ORIGINAL[2:], strict=True):
        assert row["text"] in {raw["problem"] + s for s in ("", *ICT_SUFFIXES)}
    assert rows[0]["solution"] == "yes"
    view = model_view_size(80, 60, 1)
    assert rows[1]["solution"] == scale_box([8, 6, 40, 30], (80, 60), view)
    assert rows[3]["solution"] == ["<Bo>", "<Ann>"]


def test_each_epoch_draws_the_ict_suffix_again_and_a_seed_repeats(
    dataset: tuple[Path, Path],
) -> None:
    path, root = dataset
    texts = {
        _preview(str(path), "--image-root", str(root), "--epoch", str(e))[2]["text"]
        for e in range(12)
    }
    assert len(texts) > 1
    first = _preview(str(path), "--image-root", str(root), "--epoch", "3", "--seed", "5")
    assert first == _preview(str(path), "--image-root", str(root), "--epoch", "3", "--seed", "5")


def test_n_limits_the_records_printed(dataset: tuple[Path, Path]) -> None:
    path, root = dataset
    assert [r["task"] for r in _preview(str(path), "--image-root", str(root), "--n", "2")] == [
        "oct",
        "vlt",
    ]


def test_our_format_reads_too(tmp_path: Path) -> None:
    solid(tmp_path / "a.png", (1, 2, 3))
    solid(tmp_path / "b.png", (3, 2, 1))
    path = tmp_path / "ours.jsonl"
    record = {"image": ["a.png", "b.png"], "problem": "Same?", "solution": "no", "task": "oct"}
    path.write_text(json.dumps(record) + "\n")
    (row,) = _preview(str(path))
    assert row == {"task": "oct", "images": 2, "text": "Same?" + YES_NO_SUFFIX, "solution": "no"}


def test_a_bad_file_fails_naming_the_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"image": "nope.png", "problem": "p", "solution": "yes", "task": "oct"}) + "\n"
    )
    result = runner.invoke(app, ["data", "preview", str(path)])
    assert result.exit_code == 2
    assert "record 0 (line 1): field 'image': file not found" in result.output


def _subjects(root: Path) -> Path:
    import io

    from PIL import Image

    from tests.utils.images import fixture_photo

    for subject in ("dog", "cat"):
        (root / subject).mkdir(parents=True)
        for index in range(3):
            image = Image.open(io.BytesIO(fixture_photo(subject, index))).convert("RGB")
            image.resize((64, 64)).save(root / subject / f"{index}.jpg")
    return root


def test_from_subjects_writes_a_dataset_whose_names_are_drawn_per_epoch(tmp_path: Path) -> None:
    from trainer.records import load_records

    source = _subjects(tmp_path / "subjects")
    out = tmp_path / "data" / "pairs.jsonl"
    result = runner.invoke(app, ["data", "from-subjects", str(source), str(out), "--records", "12"])
    assert result.exit_code == 0, result.output
    assert "12 records (oct 8, ict 4) from 2 subjects" in result.output
    records = load_records(out)
    assert len(records) == 12 and {r.task for r in records} == {"oct", "ict"}
    # Name slots with the subjects' names beside them: the trainer draws fake names each epoch.
    assert all(r.name_slots == 1 and r.meta["real_names"] for r in records)
    rows = _preview(str(out), "--n", "0")
    assert {r["solution"] for r in rows if r["task"] == "ict"} <= {"<dog>", "<cat>"}
    assert not any("{name0}" in r["text"] for r in rows)


def test_from_subjects_can_fix_the_names_in_the_file(tmp_path: Path) -> None:
    from trainer.records import load_records

    source = _subjects(tmp_path / "subjects")
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["data", "from-subjects", str(source), str(out), "--records", "6",
                                 "--fixed-names"])
    assert result.exit_code == 0, result.output
    records = load_records(out)
    assert all(r.name_slots == 0 and "real_names" not in r.meta for r in records)
    names = {r.solution for r in records if r.task == "ict"}
    assert names and not names & {"<dog>", "<cat>"}  # fake names, as the paper's data has


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    """A RefCOCO-like file (instances + refs) over one scene made of a DreamBooth dog."""
    from tests.trainer.test_coco_records import REFS, _instances, _scene

    root = tmp_path / "coco"
    _scene(root / "train2014" / "scene.jpg")
    path = tmp_path / "refcoco.json"
    path.write_text(json.dumps(_instances(refs=REFS)))
    return path, root


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_from_coco_writes_vlt_records_the_trainer_reads(tmp_path: Path, suffix: str) -> None:
    from trainer.records import load_records

    path, root = _coco(tmp_path)
    out = tmp_path / "data" / f"vlt{suffix}"
    result = runner.invoke(app, ["data", "from-coco", str(path), "--image-root", str(root),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 VLT records {'vlt_refcoco': 3} from 2 objects" in result.output
    records = load_records(out)
    assert [r.task for r in records] == ["vlt"] * 3 and records[0].images[0].is_file()
    # The preview shows the box in the frame the model sees, with the iou suffix.
    rows = {r["text"]: r for r in _preview(str(out), "--n", "0")}
    (dog_text,) = [t for t in rows if "dog on the left" in t]
    assert dog_text.endswith(IOU_SUFFIX)
    view = model_view_size(240, 120, 1)
    assert rows[dog_text]["solution"] == scale_box([10, 20, 110, 100], (240, 120), view)


def test_from_coco_refuses_a_wrong_image_root_and_writes_nothing(tmp_path: Path) -> None:
    path, _ = _coco(tmp_path)
    out = tmp_path / "vlt.json"
    (tmp_path / "elsewhere").mkdir()
    result = runner.invoke(app, ["data", "from-coco", str(path), "--image-root",
                                 str(tmp_path / "elsewhere"), "--out", str(out)])
    assert result.exit_code == 2
    assert "image not found" in result.output and "--skip-missing" in result.output
    assert not out.exists()

