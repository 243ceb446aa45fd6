"""Training records: dataset files, records built from concepts, fake names, TRL rows, summary."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from app.ml.prompt import DETAIL_QUESTION, oct_problem
from trainer.data import (
    BuildOptions,
    ConceptPhotos,
    DatasetError,
    FakeNameSampler,
    TaskMix,
    TrainingRecord,
    build_concept_records,
    load_records,
    model_view_size,
    summarize,
    to_trl_dataset,
)

pytestmark = pytest.mark.nodb

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture(scope="module")
def concepts(tmp_path_factory: pytest.TempPathFactory) -> list[ConceptPhotos]:
    """Five concepts, three solid-colour photos each (one colour per concept)."""
    root = tmp_path_factory.mktemp("concepts")
    out = []
    for index, colour in enumerate(COLOURS):
        paths = [_solid(root / f"c{index}_{k}.png", colour, (80 + 8 * k, 60)) for k in range(3)]
        out.append(ConceptPhotos(f"id{index}", f"Real{index}", f"thing {index}",
                                 f"category{index}", paths))
    return out


@pytest.fixture(scope="module")
def built(concepts: list[ConceptPhotos], tmp_path_factory: pytest.TempPathFactory
          ) -> list[TrainingRecord]:
    out = tmp_path_factory.mktemp("composites")
    return build_concept_records(concepts, out, BuildOptions(num_records=200, seed=3,
                                                             max_pixels=160 * 160))


def _colour_at(path: Path | str, box: list[int]) -> tuple[int, ...]:
    with Image.open(path) as img:
        x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        return img.convert("RGB").getpixel((x, y))


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 20) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _concept_of(path: Path | str, concepts: list[ConceptPhotos]) -> str:
    return next(c.concept_id for c in concepts if Path(path) in c.image_paths)


# --------------------------------------------------------------------------- files


def _write_images(root: Path) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _solid(root / "img" / name, (100, 100, 100))


GOOD = [
    {"image": ["img/a.jpg", "img/b.jpg"], "problem": oct_problem("Bo"), "solution": "yes",
     "task": "oct"},
    {"image": "img/c.jpg", "problem": "Locate the dog.", "solution": [1, 2, 30, 40],
     "accu_reward_method": "iou"},
    {"image": ["img/a.jpg", "img/b.jpg"], "problem": "caption", "solution": "<Bo>",
     "accu_reward_method": "yes_no_name"},
    {"image": ["img/a.jpg", "img/b.jpg", "img/c.jpg"], "problem": "caption",
     "solution": ["<Bo>", "<Ann>"], "task": "yes_no_name_multi"},
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
    ({"image": "img/a.jpg", "problem": "p", "solution": "yes", "task": "caption"},
     "field 'task': unknown task 'caption'"),
    ({"image": "img/missing.jpg", "problem": "p", "solution": "yes", "task": "oct"},
     "field 'image': file not found"),
    ({"image": "img/a.jpg", "problem": "p", "solution": "maybe", "task": "oct"},
     "field 'solution': expected 'yes' or 'no' for task oct, got 'maybe'"),
    ({"image": "img/a.jpg", "problem": "p", "solution": [1, 2, 3], "task": "vlt"},
     "field 'solution': expected 4 integers"),
    ({"image": "img/a.jpg", "problem": "p", "solution": [1, 2, 3.5, 4], "task": "vlt"},
     "field 'solution': expected 4 integers"),
    ({"image": "img/a.jpg", "problem": "p", "solution": "Bo", "task": "ict"},
     "field 'solution': expected a bracketed name"),
    ({"image": "img/a.jpg", "problem": "p", "solution": [], "task": "ict_multi"},
     "field 'solution': expected a non-empty list"),
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
        "record 0 (line 1)", "record 1 (line 2)", "record 2 (line 3)"]


# --------------------------------------------------------------------------- concepts


def test_task_counts_follow_the_mix(built: list[TrainingRecord]) -> None:
    counts = Counter(r.task for r in built)
    assert counts == {"oct": 88, "vlt": 50, "ict": 52, "ict_multi": 10}


def test_custom_mix_and_infeasible_task_share_moves(
    concepts: list[ConceptPhotos], tmp_path: Path
) -> None:
    mix = TaskMix(oct=0.5, vlt=0.0, ict=0.25, ict_multi=0.25)
    records = build_concept_records(concepts, tmp_path, BuildOptions(num_records=40, mix=mix))
    assert Counter(r.task for r in records) == {"oct": 20, "ict": 10, "ict_multi": 10}
    single = [concepts[0]]
    records = build_concept_records(single, tmp_path, BuildOptions(num_records=20, mix=mix))
    assert "ict_multi" not in {r.task for r in records}
    assert len(records) == 20


def test_oct_negatives_use_two_concepts_and_positives_one(
    built: list[TrainingRecord], concepts: list[ConceptPhotos]
) -> None:
    octs = [r for r in built if r.task == "oct"]
    assert {r.solution for r in octs} == {"yes", "no"}
    for record in octs:
        ref, query = (_concept_of(p, concepts) for p in record.images)
        if record.solution == "no":
            assert ref != query
            assert record.meta["distractor_id"] == query
        else:
            assert ref == query
            assert record.images[0] != record.images[1]


def test_ict_query_photo_differs_from_reference(
    built: list[TrainingRecord], concepts: list[ConceptPhotos]
) -> None:
    icts = [r for r in built if r.task == "ict"]
    assert icts
    for record in icts:
        ref, query = record.images
        assert ref != query
        assert _concept_of(ref, concepts) == _concept_of(query, concepts)
        assert record.solution == "<{name0}>"


def test_detail_question_mixed_into_ict(built: list[TrainingRecord]) -> None:
    icts = [r for r in built if r.task in ("ict", "ict_multi")]
    with_detail = [r for r in icts if DETAIL_QUESTION in r.problem]
    assert 0 < len(with_detail) < len(icts)


def test_multi_ict_composite_written_with_correct_boxes(
    built: list[TrainingRecord], concepts: list[ConceptPhotos]
) -> None:
    multis = [r for r in built if r.task == "ict_multi"]
    assert multis
    for record in multis:
        *refs, canvas = record.images
        names = record.solution
        assert 2 <= len(refs) == len(names) <= 3
        assert names == [f"<{{name{i}}}>" for i in range(len(refs))]
        assert Path(canvas).is_file()
        with Image.open(canvas) as img:
            assert list(img.size) == record.meta["view_size"]
            assert img.width % 28 == 0 and img.height % 28 == 0
        by_id = {c.concept_id: c for c in concepts}
        for ref, box, cid in zip(refs, record.meta["boxes"], record.meta["concept_ids"],
                                 strict=True):
            colour = COLOURS[int(str(cid)[2:])]
            assert _close(_colour_at(canvas, box), colour)
            assert Path(ref) in by_id[cid].image_paths


def test_vlt_from_composite_box_points_at_the_named_category(
    built: list[TrainingRecord], concepts: list[ConceptPhotos]
) -> None:
    vlts = [r for r in built if r.task == "vlt"]
    assert vlts
    for record in vlts:
        (canvas,) = record.images
        cid = record.meta["concept_ids"][0]
        concept = next(c for c in concepts if c.concept_id == cid)
        assert f"the {concept.category}" in record.problem
        with Image.open(canvas) as img:
            x1, y1, x2, y2 = record.solution
            assert 0 <= x1 < x2 <= img.width and 0 <= y1 < y2 <= img.height
            assert (x2 - x1) < img.width  # never the whole canvas
        assert _close(_colour_at(canvas, record.solution), COLOURS[int(cid[2:])])


def test_vlt_from_box_annotation_scaled_to_model_view(tmp_path: Path) -> None:
    photo = tmp_path / "big.png"
    img = Image.new("RGB", (1000, 500), (0, 0, 0))
    img.paste((255, 0, 0), (100, 50, 300, 250))
    img.save(photo)
    concept = ConceptPhotos("x", "Rex", "a dog", "dog", [photo], {photo: (100, 50, 300, 250)})
    options = BuildOptions(num_records=3, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0),
                           max_pixels=280 * 280)
    records = build_concept_records([concept], tmp_path / "out", options)
    view = model_view_size(1000, 500, options.min_pixels, options.max_pixels)
    sx, sy = view[0] / 1000, view[1] / 500
    for record in records:
        assert record.images == [photo]
        assert record.solution == [round(100 * sx), round(50 * sy), round(300 * sx),
                                   round(250 * sy)]
        assert record.meta["kind"] == "vlt_annotation"


# --------------------------------------------------------------------------- names + TRL rows


@pytest.fixture(scope="module")
def sampler() -> FakeNameSampler:
    return FakeNameSampler(seed=1)


def _text(prompt: list[dict]) -> str:
    return " ".join(c.get("text", "") for m in prompt for c in m["content"])


def test_fake_names_differ_across_epochs_and_hide_real_names(
    built: list[TrainingRecord], sampler: FakeNameSampler
) -> None:
    dataset, transform = to_trl_dataset(built[:40], sampler, max_pixels=112 * 112)
    named = [i for i in range(40) if built[i].name_slots]
    first = [_text(dataset[i]["prompt"]) for i in named]
    again = [_text(dataset[i]["prompt"]) for i in named]
    assert first == again  # the G copies of a row in one epoch see the same names
    transform.epoch = 1
    second = [_text(dataset[i]["prompt"]) for i in named]
    changed = sum(a != b for a, b in zip(first, second, strict=True))
    assert changed >= 0.8 * len(named)
    real = {f"Real{i}" for i in range(len(COLOURS))}
    for i in named:
        row = dataset[i]
        text = _text(row["prompt"])
        assert not any(name in text for name in real)
        assert "{name" not in text
        names = row["solution"] if isinstance(row["solution"], list) else [row["solution"]]
        for name in names:
            if isinstance(name, str) and name.startswith("<"):
                assert name in text


def test_real_names_when_fake_names_are_off(built: list[TrainingRecord]) -> None:
    record = next(r for r in built if r.task == "ict")
    dataset, _ = to_trl_dataset([record], None)
    row = dataset[0]
    assert row["solution"] == f"<{record.meta['real_names'][0]}>"
    assert row["solution"] in _text(row["prompt"])


def test_trl_row_shape(built: list[TrainingRecord], sampler: FakeNameSampler) -> None:
    dataset, _ = to_trl_dataset(built[:30], sampler, max_pixels=112 * 112)
    for index in range(30):
        row = dataset[index]
        (message,) = row["prompt"]
        assert message["role"] == "user"
        placeholders = [c for c in message["content"] if c["type"] == "image"]
        assert len(placeholders) == len(row["images"]) == len(built[index].images)
        assert all(isinstance(im, Image.Image) and im.width * im.height <= 112 * 112
                   for im in row["images"])
        assert row["task"] == built[index].task
        if row["task"] == "vlt":
            assert isinstance(row["solution"], list) and len(row["solution"]) == 4
            assert all(isinstance(v, int) for v in row["solution"])


def test_fake_names_are_usable_first_names(sampler: FakeNameSampler) -> None:
    names = sampler.draw("k", 3, exclude=["Real0"])
    assert len(set(names)) == 3
    assert all(" " not in n and "<" not in n and n != "Real0" for n in names)
    assert sampler.draw("k", 3, exclude=["Real0"]) == names
    assert len(sampler.pools) == 5


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
