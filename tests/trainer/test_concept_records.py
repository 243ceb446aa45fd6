"""Records built from concepts: the task mix, OCT/ICT/multi-ICT/VLT records and composites."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from app.ml.images import target_size
from app.ml.prompt import DETAIL_QUESTION
from tests.trainer.factories import COLOURS
from trainer.concept_records import BuildOptions, ConceptPhotos, TaskMix, build_concept_records
from trainer.records import TrainingRecord

pytestmark = pytest.mark.nodb


def _colour_at(path: Path | str, box: list[int]) -> tuple[int, ...]:
    with Image.open(path) as img:
        x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        return img.convert("RGB").getpixel((x, y))


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 20) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _concept_of(path: Path | str, concepts: list[ConceptPhotos]) -> str:
    return next(c.concept_id for c in concepts if Path(path) in c.image_paths)


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
        for ref, box, cid in zip(
            refs, record.meta["boxes"], record.meta["concept_ids"], strict=True
        ):
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
    options = BuildOptions(
        num_records=3, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0), max_pixels=280 * 280
    )
    records = build_concept_records([concept], tmp_path / "out", options)
    view = target_size(1000, 500, options.min_pixels, options.max_pixels)
    sx, sy = view[0] / 1000, view[1] / 500
    for record in records:
        assert record.images == [photo]
        assert record.solution == [
            round(100 * sx),
            round(50 * sy),
            round(300 * sx),
            round(250 * sy),
        ]
        assert record.meta["kind"] == "vlt_annotation"
