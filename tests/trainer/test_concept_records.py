"""Records built from concepts: the task mix, OCT/ICT/multi-ICT/VLT records and composites."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from app.ml.instructions import (
    DETAIL_QUESTION,
    ICT_MULTI_PREAMBLES,
    ICT_SINGLE_PREAMBLE,
    ICT_SUFFIXES,
    IOU_SUFFIX,
    OCT_PREAMBLE,
    QUESTION_POOLS,
    YES_NO_SUFFIX,
)
from tests.trainer.factories import COLOURS
from trainer.concept_records import (
    BuildOptions,
    ConceptPhotos,
    GroupPhoto,
    TaskMix,
    build_concept_records,
)
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
        by_id = {c.concept_id: c for c in concepts}
        # Boxes are in the canvas file's own pixels: the reader maps them into the model view.
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


def test_vlt_from_box_annotation_keeps_the_photos_own_pixels(tmp_path: Path) -> None:
    photo = tmp_path / "big.png"
    img = Image.new("RGB", (1000, 500), (0, 0, 0))
    img.paste((255, 0, 0), (100, 50, 300, 250))
    img.save(photo)
    concept = ConceptPhotos("x", "Rex", "a dog", "dog", [photo], {photo: (100, 50, 300, 250)})
    options = BuildOptions(num_records=3, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0))
    records = build_concept_records([concept], tmp_path / "out", options)
    for record in records:
        assert record.images == [photo]
        assert record.solution == [100, 50, 300, 250]
        assert record.meta["kind"] == "vlt_annotation"


def _boxed_photo(tmp_path: Path, name: str) -> Path:
    photo = tmp_path / f"{name}.png"
    img = Image.new("RGB", (400, 300), (0, 0, 0))
    img.paste((255, 0, 0), (40, 30, 200, 150))
    img.save(photo)
    return photo


def test_vlt_from_a_detected_box_is_the_real_photo_labelled_so(tmp_path: Path) -> None:
    photo = _boxed_photo(tmp_path, "p")
    concept = ConceptPhotos("x", "Rex", "", "dog", [photo], {photo: (40, 30, 200, 150)},
                            box_sources={photo: "detector"})
    options = BuildOptions(num_records=4, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0))
    records = build_concept_records([concept], tmp_path / "out", options)
    assert {r.meta["kind"] for r in records} == {"vlt_detected_box"}
    assert all(r.images == [photo] and r.solution == [40, 30, 200, 150] for r in records)


def test_composites_are_only_the_fallback_for_photos_without_a_box(tmp_path: Path) -> None:
    boxed = _boxed_photo(tmp_path, "boxed")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (80, 60), (0, 0, 255)).save(plain)
    with_box = ConceptPhotos("a", "Rex", "", "dog", [boxed], {boxed: (40, 30, 200, 150)},
                             box_sources={boxed: "detector"})
    without = ConceptPhotos("b", "Mia", "", "cat", [plain])
    options = BuildOptions(num_records=20, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0))
    records = build_concept_records([with_box, without], tmp_path / "out", options)
    assert {r.meta["kind"] for r in records} == {"vlt_detected_box"}
    alone = build_concept_records([without], tmp_path / "out2", options)
    assert {r.meta["kind"] for r in alone} == {"vlt_composite"}


def test_the_referring_expression_comes_from_the_category_or_the_description(
    tmp_path: Path,
) -> None:
    photo = _boxed_photo(tmp_path, "p")
    concept = ConceptPhotos("x", "Rex", "A corgi with a red collar.", "dog", [photo],
                            {photo: (40, 30, 200, 150)})
    options = BuildOptions(num_records=40, mix=TaskMix(oct=0, vlt=1, ict=0, ict_multi=0))
    records = build_concept_records([concept], tmp_path / "out", options)
    said = {e for r in records for e in ("the dog", "the corgi with a red collar")
            if e in r.problem}
    assert said == {"the dog", "the corgi with a red collar"}


def test_a_description_that_is_no_short_noun_phrase_is_not_an_expression() -> None:
    from trainer.concept_records import referring_expressions

    assert referring_expressions("dog", "Rex loves the beach and barks at seagulls.") == [
        "the dog"]
    assert referring_expressions("", "an old brass lamp") == ["the old brass lamp"]
    assert referring_expressions("", "") == ["the object"]


# --------------------------------------------------------------------------- instruction texts


def _question_of(record: TrainingRecord) -> str:
    """The pool question a record's problem was built from (the problem must end with it)."""
    name = "<{name0}>"
    for question in QUESTION_POOLS[record.task]:
        if record.task == "vlt":
            head, _, tail = question.partition("<name>")
            if record.problem.startswith(head) and record.problem.endswith(tail):
                return question
        elif record.problem.endswith(" " + question.replace("<name>", name)):
            return question
    raise AssertionError(f"no pool question ends {record.problem!r}")


def test_problems_are_a_preamble_and_a_question_of_the_tasks_pool(
    built: list[TrainingRecord],
) -> None:
    preambles = {
        "oct": [OCT_PREAMBLE],
        "ict": [ICT_SINGLE_PREAMBLE],
        "ict_multi": list(ICT_MULTI_PREAMBLES),
    }
    for record in built:
        _question_of(record)  # VLT: the question alone, its expression in the name's place
        if record.task == "vlt":
            continue
        heads = [p.split("{", 1)[0] for p in preambles[record.task]]
        assert any(record.problem.startswith(h) for h in heads), record.problem


def test_questions_cover_the_pools_and_follow_the_seed(
    concepts: list[ConceptPhotos], tmp_path: Path
) -> None:
    options = BuildOptions(num_records=400, seed=11)
    records = build_concept_records(concepts, tmp_path / "a", options)
    again = build_concept_records(concepts, tmp_path / "b", options)
    other = build_concept_records(concepts, tmp_path / "c", BuildOptions(num_records=400, seed=12))
    assert [r.problem for r in records] == [r.problem for r in again]
    assert [r.problem for r in records] != [r.problem for r in other]
    asked = {t: {_question_of(r) for r in records if r.task == t} for t in ("oct", "vlt", "ict")}
    assert asked["oct"] == set(QUESTION_POOLS["oct"])
    assert asked["vlt"] == set(QUESTION_POOLS["vlt"])
    assert len(asked["ict"]) > 15
    multis = [r for r in records if r.task == "ict_multi"]
    variants = {
        next(
            i for i, p in enumerate(ICT_MULTI_PREAMBLES) if r.problem.startswith(p.split("{", 1)[0])
        )
        for r in multis
    }
    assert variants == {0, 1, 2, 3}


def test_stored_problems_carry_no_suffix(built: list[TrainingRecord]) -> None:
    suffixes = (YES_NO_SUFFIX, IOU_SUFFIX, *ICT_SUFFIXES)
    assert not [r.problem for r in built if r.problem.endswith(suffixes)]


def test_concept_records_doctests_pass() -> None:
    import doctest

    from trainer import concept_records

    result = doctest.testmod(concept_records)
    assert result.attempted >= 2 and result.failed == 0


# --------------------------------------------------------------------------- group photos


#: Where the DreamBooth dog and cat are pasted into the group photo (x1, y1, x2, y2).
GROUP_BOXES = {"dog": (10, 20, 110, 100), "cat": (130, 10, 226, 106)}


def _dreambooth(subject: str, index: int, size: tuple[int, int]) -> Image.Image:
    import io

    from tests.utils.images import fixture_photo

    return Image.open(io.BytesIO(fixture_photo(subject, index))).convert("RGB").resize(size)


@pytest.fixture
def pets(tmp_path: Path) -> tuple[list[ConceptPhotos], Path]:
    """Two concepts made of DreamBooth photos, and a group photo holding both (at
    GROUP_BOXES) on a plain background."""
    concepts = []
    for subject in ("dog", "cat"):
        paths = []
        for index in range(2):
            path = tmp_path / f"{subject}{index}.jpg"
            _dreambooth(subject, index + 1, (72, 64)).save(path)
            paths.append(path)
        concepts.append(ConceptPhotos(subject, subject.title(), "", subject, paths))
    group = Image.new("RGB", (240, 120), (90, 110, 90))
    for subject, (x1, y1, x2, y2) in GROUP_BOXES.items():
        group.paste(_dreambooth(subject, 0, (x2 - x1, y2 - y1)), (x1, y1))
    photo = tmp_path / "together.png"
    group.save(photo)
    return concepts, photo


ONLY_MULTI = TaskMix(oct=0.0, vlt=0.0, ict=0.0, ict_multi=1.0)


def _multi(concepts: list[ConceptPhotos], out: Path, *groups: GroupPhoto) -> list[TrainingRecord]:
    options = BuildOptions(num_records=6, mix=ONLY_MULTI, seed=1)
    return build_concept_records(concepts, out, options, groups)


def test_multi_ict_comes_from_the_real_photo_with_references_cropped_from_it(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    concepts, photo = pets
    group = GroupPhoto(photo, ("dog", "cat"), boxes=GROUP_BOXES, photo_id=9)
    records = _multi(concepts, tmp_path / "out", group)
    assert len(records) == 6
    source = Image.open(photo).convert("RGB")
    for record in records:
        assert record.meta["kind"] == "ict_multi_photo" and record.meta["photo_id"] == 9
        assert record.images[-1] == photo  # the real photo is the query
        assert record.meta["references"] == ["crop", "crop"]
        assert record.solution == ["<{name0}>", "<{name1}>"]
        for ref, concept_id in zip(record.images[:-1], record.meta["concept_ids"], strict=True):
            crop = Image.open(ref).convert("RGB")
            expected = source.crop(GROUP_BOXES[concept_id])
            assert crop.size == expected.size
            # The reference is that concept's region of the photo (JPEG-close).
            assert _close(crop.resize((1, 1)).getpixel((0, 0)),
                          expected.resize((1, 1)).getpixel((0, 0)), tol=6)
    assert not list((tmp_path / "out").glob("composite_*"))


def test_a_concept_without_a_box_in_the_photo_is_shown_by_its_own_photo(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    concepts, photo = pets
    whole = (0, 0, 240, 120)  # retrieval's whole-photo hit: no region of one concept
    group = GroupPhoto(photo, ("dog", "cat"), boxes={"dog": GROUP_BOXES["dog"], "cat": whole})
    for record in _multi(concepts, tmp_path / "out", group):
        kinds = dict(zip(record.meta["concept_ids"], record.meta["references"], strict=True))
        assert kinds == {"dog": "crop", "cat": "concept_photo"}
        cat_ref = record.images[record.meta["concept_ids"].index("cat")]
        assert Path(cat_ref) in concepts[1].image_paths


def test_boxes_given_in_another_frame_are_scaled_to_the_file(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    concepts, photo = pets
    doubled = {k: tuple(2 * v for v in box) for k, box in GROUP_BOXES.items()}
    group = GroupPhoto(photo, ("dog", "cat"), boxes=doubled, frame=(480, 240))
    record = _multi(concepts, tmp_path / "out", group)[0]
    sizes = {Image.open(ref).size for ref in record.images[:-1]}
    assert sizes == {(100, 80), (96, 96)}


def test_composites_are_only_the_fallback_and_labelled_so(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    from trainer.records import summarize

    concepts, photo = pets
    fallback = _multi(concepts, tmp_path / "a")
    assert {r.meta["kind"] for r in fallback} == {"ict_multi_composite"}
    real = _multi(concepts, tmp_path / "b", GroupPhoto(photo, ("dog", "cat")))
    assert summarize(real)["per_kind"] == {"ict_multi_photo": 6}
    assert summarize(fallback)["per_kind"] == {"ict_multi_composite": 6}


def test_a_group_photo_needs_two_of_the_concepts_given(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    concepts, photo = pets
    # The second concept in the photo was not given (its owner did not allow training).
    records = _multi(concepts, tmp_path / "out", GroupPhoto(photo, ("dog", "not-allowed")))
    assert {r.meta["kind"] for r in records} == {"ict_multi_composite"}
    assert all(photo not in r.images for r in records)


def test_group_photos_give_multi_ict_to_concepts_of_one_photo_each(
    pets: tuple[list[ConceptPhotos], Path], tmp_path: Path
) -> None:
    concepts, photo = pets
    # One photo per concept: no composite can be made (it needs another photo of each).
    singles = [ConceptPhotos(c.concept_id, c.name, "", c.category, c.image_paths[:1])
               for c in concepts]
    records = _multi(singles, tmp_path / "out", GroupPhoto(photo, ("dog", "cat")))
    assert len(records) == 6 and {r.meta["kind"] for r in records} == {"ict_multi_photo"}
