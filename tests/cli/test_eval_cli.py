"""`repic eval ...`: the grounding metric on a result file; RAP import/export as an operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app
from app.models import Concept, EvaluationSet, User
from tests.utils.images import make_image

runner = CliRunner()


@pytest.mark.nodb
def test_grounding_prints_metrics_and_slot_counts(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            [
                ["q1.jpg", ["<bo>"], "<bo> naps on the sofa.</s>", "Give a caption of the image."],
                ["q2.jpg", ["<bo>", "<anya>"], "<anya> hugs a dog.", ""],
                ["q3.jpg", ["<anya>"], "<bo> runs.", ""],
            ]
        )
    )
    result = runner.invoke(app, ["eval", "grounding", str(results)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    # q2's <bo> is "none": the only other name mentioned, <anya>, is its own ground truth.
    assert (summary["slots"], summary["correct"], summary["miss"], summary["none"]) == (4, 2, 1, 1)
    assert (summary["precision"], summary["recall"], summary["f1"]) == (66.7, 50.0, 57.1)
    assert summary["mode"] == "paper" and summary["case_sensitive"] is False


@pytest.mark.nodb
def test_grounding_strict_and_case_sensitive_options(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps([["q.jpg", ["<Bo>"], "the bo sleeps", ""]]))
    paper = json.loads(runner.invoke(app, ["eval", "grounding", str(results)]).output)
    strict = runner.invoke(
        app, ["eval", "grounding", str(results), "--mode", "strict", "--case-sensitive"]
    )
    assert strict.exit_code == 0, strict.output
    assert paper["recall"] == 100.0 and json.loads(strict.output)["recall"] == 0.0


@pytest.mark.nodb
def test_grounding_bad_file_fails_with_a_message(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps([["q.jpg", "bo", "caption"]]))
    result = runner.invoke(app, ["eval", "grounding", str(results)])
    assert result.exit_code == 2 and "names" in result.output


@pytest.fixture
def cli_settings(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


def _users(settings: Any, *names: str) -> None:
    from app.wiring import build_container

    container = build_container(settings)
    with container.session_factory() as session:
        session.add_all([User(username=n, password_hash="x") for n in names])
        session.commit()
    container.close()


def test_import_export_and_queries_from_the_command_line(cli_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _users(cli_settings, "alice", "bob")
    src = tmp_path / "src"
    (src / "bo").mkdir(parents=True)
    (src / "bo" / "1.png").write_bytes(make_image(shape=0))
    (src / "q.png").write_bytes(make_image(color=(0, 0, 255), shape=1))
    (src / "db.json").write_text(
        json.dumps(
            {
                "concept_dict": {
                    "<bo>": {
                        "name": "<bo>",
                        "image": "bo/1.png",
                        "info": "a corgi",
                        "category": "dog",
                    }
                },
                "path_to_concept": {"bo/1.png": "<bo>"},
            }
        )
    )
    (src / "queries.json").write_text(json.dumps({"q.png": ["<bo>"]}))

    r = runner.invoke(
        app, ["eval", "import-db", str(src / "db.json"), "--root", str(src), "--user", "alice"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["created"] == ["bo"]
    r = runner.invoke(
        app,
        [
            "eval",
            "import-queries",
            str(src / "queries.json"),
            "--root",
            str(src),
            "--user",
            "alice",
            "--name",
            "mine",
        ],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "out" / "db.json"
    r = runner.invoke(app, ["eval", "export-db", "--user", "alice", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["eval", "import-db", str(out), "--root", str(out.parent), "--user", "bob"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["eval", "import-db", str(out), "--root", str(out.parent), "--user", "bob"]
    )
    assert r.exit_code == 2 and "already has" in r.output

    from app.wiring import build_container

    container = build_container(cli_settings)
    with container.session_factory() as session:
        owners = {
            c.owner_id: (c.name, c.description, c.category)
            for c in session.scalars(select(Concept))
        }
        sets = list(session.scalars(select(EvaluationSet)))
    container.close()
    assert sorted(owners.values()) == [("bo", "a corgi", "dog")] * 2
    assert [(s.name, [q["names"] for q in s.queries]) for s in sets] == [("mine", [["bo"]])]


def test_run_evaluates_a_version_in_process(cli_settings) -> None:  # type: ignore[no-untyped-def]
    from app.model_services import ModelLoading
    from app.services.concepts import Upload
    from app.wiring import build_container

    _users(cli_settings, "alice")
    container = build_container(cli_settings, ModelLoading.RETRIEVAL)
    try:
        with container.session_factory() as session:
            owner = session.scalar(select(User).where(User.username == "alice"))
            bo = container.concepts.create(
                session,
                owner,
                name="bo",
                category="dog",
                uploads=[Upload(make_image(shape=i), f"{i}.png", "image/png") for i in range(2)],
            )
            container.concepts.set_image_flags(
                session, owner, bo.id, bo.images[1].id, eval_only=True
            )
            container.evaluation_sets.create_heldout(session, owner, "heldout")
            from app.services.versions import VersionService

            base = VersionService(container.session_factory, "tiny").ensure_base(session)
    finally:
        container.close()
    r = runner.invoke(app, ["eval", "run", "--version", str(base.id), "--set", "heldout"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["state"] == "succeeded" and out["slots"] == 1 and out["setting"] == "skip"


def test_4_concept_benchmark_imports_as_shipped_and_evaluates(cli_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.services.versions import VersionService
    from app.wiring import build_container
    from tests.utils.repic_benchmark import four_concept_repository

    _users(cli_settings, "alice")
    db, queries = four_concept_repository(tmp_path / "RePIC")
    r = runner.invoke(app, ["eval", "import-db", str(db), "--user", "alice"])
    assert r.exit_code == 0, r.output
    assert "black widow" in json.loads(r.output)["created"]
    r = runner.invoke(
        app, ["eval", "import-queries", str(queries), "--user", "alice", "--name", "four"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) | {"id": 0} == {
        "id": 0,
        "name": "four",
        "queries": 3,
        "case_sensitive": False,
    }
    container = build_container(cli_settings)
    try:
        with container.session_factory() as session:
            base = VersionService(container.session_factory, "tiny").ensure_base(session)
    finally:
        container.close()
    r = runner.invoke(app, ["eval", "run", "--version", str(base.id), "--set", "four"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["state"] == "succeeded" and out["slots"] == 12
    assert all(isinstance(out[m], float) for m in ("precision", "recall", "f1"))
