"""The RAP/RePIC database format: import (all or nothing), export, round trip, query sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.errors import Conflict
from app.models import Concept, ConceptImage, EvaluationSet, ImageEmbedding, User
from app.services.concepts import Upload
from app.services.rap_format import (
    ImportFormatError,
    export_database,
    heldout_queries,
    import_database,
    import_queries,
    info_text,
)
from tests.utils.images import make_image
from tests.utils.repic_benchmark import (
    FOUR_CONCEPTS,
    four_concept_repository,
    two_concept_repository,
)
from tests.utils.users import user_row


def _write_db(root: Path, concepts: dict[str, dict[str, Any]], extra: dict[str, str] | None = None,
              ) -> Path:
    """A RAP database under ``root`` whose images are generated PNGs."""
    for entry in concepts.values():
        paths = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        for i, rel in enumerate(paths):
            if rel.startswith("missing"):
                continue
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(make_image(color=(10 * len(rel), 90, 30 * i), shape=i))
    for rel in (extra or {}):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(make_image(color=(5, 5, 250), shape=2))
    db = {"concept_dict": concepts, "path_to_concept": extra or {}}
    path = root / "database.json"
    path.write_text(json.dumps(db))
    return path


def _concepts(container: Any, user: User) -> dict[str, tuple[str, str, list[str], list[str]]]:
    with container.session_factory() as session:
        rows = session.scalars(select(Concept).where(Concept.owner_id == user.id))
        return {
            c.name: (c.description, c.category,
                     sorted(i.sha256 for i in c.images if not i.eval_only),
                     sorted(i.sha256 for i in c.images if i.eval_only))
            for c in rows
        }


def _count(container: Any, model: Any) -> int:
    with container.session_factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _stored_files(container: Any) -> list[Path]:
    root = container.settings.images_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_import_creates_concepts_with_bare_names_photos_and_embeddings(container, tmp_path,
                                                                       ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db = _write_db(tmp_path, {
        "<bo>": {"name": "<bo>", "image": ["bo/1.png", "bo/2.png"], "info": "a corgi",
                 "category": "dog"},
        "<mug>": {"name": "<mug>", "image": "mug/1.png",
                  "info": {"general": ["white", "round"], "category": "cup"}, "category": ""},
    }, extra={"bo/3.png": "<bo>"})
    with container.session_factory() as session:
        report = import_database(session, container.concepts, owner, db, tmp_path)
    assert sorted(report.created) == ["bo", "mug"] and report.photos_added == 4
    found = _concepts(container, owner)
    assert found["bo"][:2] == ("a corgi", "dog") and len(found["bo"][2]) == 3
    assert found["mug"][:2] == ("general: white, round", "cup")
    assert _count(container, ImageEmbedding) == 4


def test_missing_file_names_key_and_path_and_imports_nothing(container, tmp_path,
                                                             ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db = _write_db(tmp_path, {
        "<bo>": {"name": "<bo>", "image": ["bo/1.png"], "info": "a corgi", "category": "dog"},
        "<mug>": {"name": "<mug>", "image": ["missing/1.png"], "info": "", "category": "cup"},
    })
    with container.session_factory() as session, pytest.raises(ImportFormatError) as err:
        import_database(session, container.concepts, owner, db, tmp_path)
    assert "<mug>" in err.value.detail and "missing/1.png" in err.value.detail
    assert _count(container, Concept) == 0 and _count(container, ConceptImage) == 0
    assert _stored_files(container) == []


def test_unknown_key_in_path_to_concept_is_refused(container, tmp_path) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db = _write_db(tmp_path, {"<bo>": {"name": "<bo>", "image": "bo/1.png", "info": "",
                                       "category": "dog"}}, extra={"x/1.png": "<ghost>"})
    with container.session_factory() as session, pytest.raises(ImportFormatError) as err:
        import_database(session, container.concepts, owner, db, tmp_path)
    assert "<ghost>" in err.value.detail
    assert _count(container, Concept) == 0


def test_existing_name_conflicts_by_default_and_merges_on_request(container, tmp_path,
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    with container.session_factory() as session:
        container.concepts.create(session, owner, name="bo", description="mine", category="dog",
                                  uploads=[Upload(make_image(shape=1), "a.png", "image/png")])
    db = _write_db(tmp_path, {
        "<bo>": {"name": "<bo>", "image": ["bo/1.png"], "info": "theirs", "category": "dog"},
        "<mug>": {"name": "<mug>", "image": ["mug/1.png"], "info": "", "category": "cup"},
    })
    with container.session_factory() as session, pytest.raises(Conflict) as err:
        import_database(session, container.concepts, owner, db, tmp_path)
    assert "bo" in err.value.detail
    assert sorted(_concepts(container, owner)) == ["bo"]
    with container.session_factory() as session:
        report = import_database(session, container.concepts, owner, db, tmp_path,
                                 on_conflict="merge")
    assert report.merged == ["bo"] and report.created == ["mug"]
    found = _concepts(container, owner)
    assert found["bo"][0] == "mine" and len(found["bo"][2]) == 2


def test_export_then_import_into_another_user_round_trips(container, tmp_path,
                                                          ) -> None:  # type: ignore[no-untyped-def]
    alice, bob = user_row(container, "alice"), user_row(container, "bob")
    with container.session_factory() as session:
        bo = container.concepts.create(
            session, alice, name="bo", description="a corgi", category="dog",
            uploads=[Upload(make_image(shape=i), f"{i}.png", "image/png") for i in range(3)])
        container.concepts.create(
            session, alice, name="mug", description="white mug", category="cup",
            uploads=[Upload(make_image(color=(9, 9, 9)), "m.png", "image/png")])
        container.concepts.set_image_flags(session, alice, bo.id, bo.images[2].id,
                                           eval_only=True)
    out = tmp_path / "export" / "db.json"
    with container.session_factory() as session:
        summary = export_database(session, container.store, alice, out)
    assert summary["concepts"] == 2 and summary["photos"] == 4
    data = json.loads(out.read_text())
    assert set(data["concept_dict"]) == {"<bo>", "<mug>"}
    assert all(v in data["concept_dict"] for v in data["path_to_concept"].values())
    with container.session_factory() as session:
        import_database(session, container.concepts, bob, out, out.parent)
    assert _concepts(container, bob) == _concepts(container, alice)


def test_import_queries_copies_photos_and_checks_names(container, tmp_path,
                                                       ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db = _write_db(tmp_path, {
        "<bo>": {"name": "<bo>", "image": "bo/1.png", "info": "", "category": "dog"},
        "<mug>": {"name": "<mug>", "image": "mug/1.png", "info": "", "category": "cup"}})
    with container.session_factory() as session:
        import_database(session, container.concepts, owner, db, tmp_path)
    for i in range(2):
        (tmp_path / f"q{i}.png").write_bytes(make_image(color=(1, 2, 100 + i), shape=i))
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps({"q0.png": ["<bo>"], "q1.png": ["bo", "<MUG>"]}))
    with container.session_factory() as session:
        row = import_queries(session, container.store, owner, queries, tmp_path, "mine",
                             case_sensitive=True)
    assert row.case_sensitive and [q["names"] for q in row.queries] == [["bo"], ["bo", "mug"]]
    for query in row.queries:
        assert container.store.absolute(query["image"]).is_file()
        assert query["sha256"] in query["image"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"q0.png": ["bo"], "q1.png": ["ghost"]}))
    files_before = len(_stored_files(container))
    with container.session_factory() as session, pytest.raises(ImportFormatError) as err:
        import_queries(session, container.store, owner, bad, tmp_path, "other")
    assert "ghost" in err.value.detail and "q1.png" in err.value.detail
    assert _count(container, EvaluationSet) == 1
    assert len(_stored_files(container)) == files_before


def test_heldout_queries_are_the_eval_only_photos(container) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    with container.session_factory() as session:
        bo = container.concepts.create(
            session, owner, name="bo", category="dog",
            uploads=[Upload(make_image(shape=i), f"{i}.png", "image/png") for i in range(2)])
        container.concepts.set_image_flags(session, owner, bo.id, bo.images[1].id,
                                           eval_only=True)
        queries = heldout_queries(session, owner)
    assert [q["names"] for q in queries] == [["bo"]]
    assert queries[0]["sha256"] == bo.images[1].sha256


@pytest.mark.nodb
def test_info_text_flattens_rap_attribute_objects() -> None:
    assert info_text("a corgi ") == "a corgi"
    assert info_text({"category": "dog", "general": ["short", "orange"],
                      "distinct features": ["big ears"]}) == (
        "general: short, orange; distinct features: big ears")
    assert info_text(None) == ""


# --------------------------------------------------------------------------- benchmarks as shipped

FOUR_KEYS = ["black widow", "captain america", "ironman", "mr.krab", "mrs.puff", "patrick",
             "sandy", "scarlet witch", "thor"]


def test_4_concept_benchmark_database_imports_as_shipped(container, tmp_path,
                                                         ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db, _ = four_concept_repository(tmp_path / "RePIC")
    with container.session_factory() as session:
        report = import_database(session, container.concepts, owner, db, None)
    # Keys, not names, become the concepts: captions must hold <ironman>, as the metric scores.
    assert sorted(report.created) == FOUR_KEYS
    assert report.photos_added == len(FOUR_KEYS) and report.photos_skipped == 0
    assert report.names["ironman"] == "Iron Man" and report.names["mr.krab"] == "Mr.Krabs"
    assert "thor" not in report.names
    found = _concepts(container, owner)
    assert all(len(found[key][2]) == 1 for key in FOUR_KEYS)
    assert found["black widow"][:2] == ("Black Widow, a human.", "human")


def test_4_concept_queries_become_one_query_per_subset(container, tmp_path,
                                                       ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db, queries = four_concept_repository(tmp_path / "RePIC")
    with container.session_factory() as session:
        import_database(session, container.concepts, owner, db, None)
        row = import_queries(session, container.store, owner, queries, None, "four")
    assert [q["names"] for q in row.queries] == [
        ["thor", "ironman", "black widow", "captain america"],
        ["thor", "ironman", "black widow", "scarlet witch"],
        ["mr.krab", "mrs.puff", "patrick", "sandy"],
    ]
    assert row.queries[0]["sha256"] == row.queries[1]["sha256"] != row.queries[2]["sha256"]
    assert row.queries[0]["source"] == "./data/query-image-4-concepts/group photo_avengers.jpg"
    assert row.case_sensitive is False


def test_2_concept_sets_score_case_sensitively_by_default(container, tmp_path,
                                                          ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    db, queries = two_concept_repository(tmp_path / "RePIC")
    with container.session_factory() as session:
        report = import_database(session, container.concepts, owner, db, None)
        row = import_queries(session, container.store, owner, queries, None, "two")
        forced = import_queries(session, container.store, owner, queries, None, "two-ci",
                                case_sensitive=False)
    assert sorted(report.created) == ["Anya", "Bond"]
    assert row.case_sensitive is True and [q["names"] for q in row.queries] == [["Anya", "Bond"]]
    assert forced.case_sensitive is False


def test_paths_relative_to_the_databases_parent_folder(container, tmp_path,
                                                       ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    folder = tmp_path / "data" / "database_tot" / "database_dreambooth"
    folder.mkdir(parents=True)
    (folder / "dog.jpg").write_bytes(make_image(shape=1, fmt="JPEG"))
    db = folder / "database.json"
    db.write_text(json.dumps({
        "concept_dict": {"<dog>": {"name": "dog", "image": "./database_dreambooth/dog.jpg",
                                   "info": "<dog> is a corgi.", "category": "dog"}},
        "path_to_concept": {"database_dreambooth/dog.jpg": "<dog>"}}))
    with container.session_factory() as session:
        report = import_database(session, container.concepts, owner, db, None)
    # The same file under two spellings is one photo, not a photo and a duplicate.
    assert report.created == ["dog"] and report.photos_added == 1
    assert report.photos_skipped == 0


def test_a_file_name_is_looked_up_in_the_databases_own_folder_only(container, tmp_path,
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    owner = user_row(container, "anya")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bo.jpg").write_bytes(make_image(shape=2, fmt="JPEG"))
    db = tmp_path / "database.json"
    db.write_text(json.dumps({"concept_dict": {"<bo>": {"name": "bo", "image": "./old/bo.jpg",
                                                        "info": "", "category": "dog"}}}))
    # Another folder's bo.jpg is not taken for it: a common file name would pick a wrong photo.
    with container.session_factory() as session, pytest.raises(ImportFormatError) as err:
        import_database(session, container.concepts, owner, db, None)
    assert "<bo>" in err.value.detail and "./old/bo.jpg" in err.value.detail
    (tmp_path / "bo.jpg").write_bytes(make_image(shape=2, fmt="JPEG"))
    with container.session_factory() as session:
        assert import_database(session, container.concepts, owner, db, None).created == ["bo"]


def test_a_key_with_a_space_is_pinned_retrieved_and_scored(container, tmp_path,
                                                           ) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from app.services.evaluation_scoring import slot_outcomes

    owner = user_row(container, "anya")
    repo = tmp_path / "RePIC"
    db, _ = four_concept_repository(repo)
    with container.session_factory() as session:
        import_database(session, container.concepts, owner, db, None)
        (widow,) = container.concepts.get_by_names(session, owner, ["<black widow>"])
        assert widow.name == "black widow"
        photo = Image.open(repo / FOUR_CONCEPTS["<black widow>"][1]).convert("RGB")
        captions = container.models.captions()
        pinned, _ = captions.plan(session, owner, photo, [widow.id], False, None)
        prompt = captions.build_prompt(session, owner, pinned, photo, "Q?")
        assert "1. Name: <black widow>, Info: Black Widow, a human." in prompt.text()
        retrieved, _ = captions.plan(session, owner, photo, [], True, 2)
        assert retrieved[0].name == "black widow" and not retrieved[0].pinned
        prompt = captions.build_prompt(session, owner, retrieved, photo, "Q?")
        assert "Name: <black widow>" in prompt.text()
    caption = "In this photo <black widow> stands beside a car."
    assert slot_outcomes([(["black widow"], caption)], False, "strict")[0]["slots"] == {
        "black widow": "correct"}
    # The paper's metric splits captions on whitespace: a spaced key never matches (its quirk).
    assert slot_outcomes([(["black widow"], caption)], False, "paper")[0]["slots"] == {
        "black widow": "none"}


def test_an_imported_spaced_key_survives_edits_but_users_cannot_choose_one(
        container, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.errors import InvalidInput

    owner = user_row(container, "anya")
    db, _ = four_concept_repository(tmp_path / "RePIC")
    with container.session_factory() as session:
        import_database(session, container.concepts, owner, db, None)
        (widow,) = container.concepts.get_by_names(session, owner, ["black widow"])
        edited = container.concepts.update(session, owner, widow.id, name="black widow",
                                           description="A spy.")
        assert (edited.name, edited.description) == ("black widow", "A spy.")
        with pytest.raises(InvalidInput) as err:
            container.concepts.update(session, owner, widow.id, name="red widow")
        assert "no spaces" in err.value.detail
        with pytest.raises(InvalidInput):
            container.concepts.create(session, owner, name="big bo",
                                      uploads=[Upload(make_image(), "a.png", "image/png")])
