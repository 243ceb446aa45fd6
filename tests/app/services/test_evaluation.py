"""Evaluation runs (tiny model and a deterministic fake vLLM), jobs, the hook and the gate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.api.errors import http_status
from app.errors import InvalidInput
from app.models import Caption, Evaluation, EvaluationSet, Job, ModelVersion, User
from app.services.concepts import Upload
from app.services.evaluation_gate import EvaluationGate, GateRefused, gate_check
from app.services.evaluation_scoring import slot_outcomes
from app.settings import EvaluationSettings
from tests.support.fake_vllm import FakeVLLM
from tests.utils.images import make_image
from tests.utils.users import user_row
from trainer.evaluate import grounding_metrics


def _user(container: Any, name: str = "root", admin: bool = True) -> User:
    return user_row(container, name, admin=admin)


def _concept(
    container: Any,
    owner: User,
    name: str,
    shapes: range,
    color: tuple[int, int, int],
    held_out: int = 0,
) -> None:
    with container.session_factory() as session:
        concept = container.concepts.create(
            session,
            owner,
            name=name,
            description=f"the {name}",
            category="thing",
            uploads=[
                Upload(make_image(color=color, shape=i), f"{i}.png", "image/png") for i in shapes
            ],
        )
        for image in concept.images[len(concept.images) - held_out :]:
            container.concepts.set_image_flags(session, owner, concept.id, image.id, eval_only=True)


def _world(container: Any) -> tuple[User, int, int]:
    """An admin with <bo> (one held-out photo) and <mug> (one held-out photo), a held-out set
    and the base version. Returns (owner, set id, base version id)."""
    owner = _user(container)
    _concept(container, owner, "bo", range(3), (200, 80, 40), held_out=1)
    _concept(container, owner, "mug", range(2), (30, 90, 200), held_out=1)
    with container.session_factory() as session:
        eval_set = container.evaluation_sets.create_heldout(session, owner, "heldout")
        base = container.versions.ensure_base(session)
        return owner, eval_set.id, base.id


def _candidate(container: Any, tmp_path: Path, name: str = "cand") -> int:
    folder = tmp_path / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    with container.session_factory() as session:
        return container.versions.register_candidate(
            session,
            name=name,
            adapter_path=str(folder),
            base_model="base-model",
            training_job_id=None,
            config={},
            data_summary={},
        ).id


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    with FakeVLLM(completion_text="<bo> is sitting on the grass.") as server:
        yield server


def _fake_caption(fake: FakeVLLM) -> dict[str, Any]:
    """Caption settings that point at the fake vLLM server."""
    return {
        "backend": "openai",
        "model": "base-model",
        "openai_base_urls": [fake.base_url],
        "server_kind": "vllm",
        "max_retries": 0,
    }


@pytest.fixture
def fake_container(settings_factory, fake):  # type: ignore[no-untyped-def]
    from app.model_services import ModelLoading
    from app.wiring import build_container

    ctr = build_container(settings_factory(caption=_fake_caption(fake)), ModelLoading.ALL)
    yield ctr
    ctr.close()


def test_tiny_model_evaluation_stores_every_caption_and_metrics(container) -> None:  # type: ignore[no-untyped-def]
    owner, set_id, base_id = _world(container)
    seen: list[tuple[int, int]] = []
    row = container.evaluations.run(
        base_id, set_id, {"setting": "skip"}, lambda d, t: seen.append((d, t))
    )
    assert row.state == "succeeded" and seen[-1] == (2, 2)
    with container.session_factory() as session:
        captions = list(session.scalars(select(Caption).where(Caption.evaluation_id == row.id)))
        eval_set = session.get(EvaluationSet, set_id)
        version = session.get(ModelVersion, base_id)
    assert len(captions) == len(eval_set.queries) == 2
    assert {c.image_sha256 for c in captions} == {q["sha256"] for q in eval_set.queries}
    assert all(c.tiny_model and c.model_version_id == base_id for c in captions)
    assert all(set(c.scores["slots"]) == set(c.scores["names"]) for c in captions)
    metrics = row.metrics
    assert metrics["slots"] == sum(len(q["names"]) for q in eval_set.queries)
    assert metrics["grounding"]["mode"] == "paper"
    assert metrics["grounding_strict"]["mode"] == "strict"
    assert metrics["clip_score"] is not None and metrics["lower_is_better"] is False
    summary = version.evaluation["results"]["heldout/skip"]
    assert summary["evaluation_id"] == row.id and summary["f1"] == metrics["f1"]
    # Evaluation captions are not the user's caption history.
    with container.session_factory() as session:
        assert container.models.captions().list(session, owner)[1] == 0


def test_deterministic_captions_score_100(fake_container, fake) -> None:  # type: ignore[no-untyped-def]
    owner = _user(fake_container)
    _concept(fake_container, owner, "bo", range(3), (200, 80, 40), held_out=2)
    _concept(fake_container, owner, "mug", range(2), (30, 90, 200))
    service = fake_container.evaluations
    with fake_container.session_factory() as session:
        eval_set = fake_container.evaluation_sets.create_heldout(session, owner, "bo-only")
        base = fake_container.versions.ensure_base(session)
    row = service.run(base.id, eval_set.id, {"setting": "skip"})
    assert (row.metrics["precision"], row.metrics["recall"], row.metrics["f1"]) == (100, 100, 100)
    assert row.metrics["slots"] == 2 and row.metrics["grounding_strict"]["f1"] == 100
    # Skip-retrieval pins the ground truth: <bo>'s reference is in every prompt.
    assert all("Name: <bo>" in str(body["messages"]) for body in fake.chat_requests)
    assert all(body["model"] == "base-model" for body in fake.chat_requests)


def test_control_characters_in_model_captions_are_stripped_before_storing(  # type: ignore[no-untyped-def]
    fake_container, fake
) -> None:
    fake.completion_text = "<bo>\x00 is sitting\x1b on the grass.\r\n"
    owner, set_id, base_id = _world(fake_container)
    row = fake_container.evaluations.run(base_id, set_id, {"setting": "skip"})
    with fake_container.session_factory() as session:
        captions = session.scalars(select(Caption).where(Caption.evaluation_id == row.id)).all()
    assert captions and {c.caption for c in captions} == {"<bo> is sitting on the grass."}


def test_candidate_is_captioned_with_its_adapter(fake_container, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, set_id, _ = _world(fake_container)
    version_id = _candidate(fake_container, tmp_path)
    fake_container.evaluations.run(version_id, set_id, {"setting": "retrieval"})
    assert fake.loaded_adapters == {f"v{version_id}": str(tmp_path / "adapters" / "cand")}
    assert {body["model"] for body in fake.chat_requests} == {f"v{version_id}"}


def test_wrong_demonstrations_score_the_demonstrated_names(fake_container, fake) -> None:  # type: ignore[no-untyped-def]
    owner, set_id, base_id = _world(fake_container)
    row = fake_container.evaluations.run(base_id, set_id, {"setting": "wrong"})
    with fake_container.session_factory() as session:
        captions = list(session.scalars(select(Caption).where(Caption.evaluation_id == row.id)))
    # The <bo> photo gets <mug> as its demonstration and vice versa.
    assert sorted(c.scores["names"][0] for c in captions) == ["bo", "mug"]
    assert all(c.concepts[0]["name"] == c.scores["names"][0] for c in captions)
    assert row.metrics["lower_is_better"] is True
    # "<bo> is sitting..." names <bo> where <bo> was the wrong demonstration: recall 50.
    assert row.metrics["recall"] == 50.0


def test_job_runner_runs_a_queued_evaluation(fake_container) -> None:  # type: ignore[no-untyped-def]
    owner, set_id, base_id = _world(fake_container)
    service = fake_container.evaluations
    with fake_container.session_factory() as session:
        evaluation, job = service.create_job(session, owner, base_id, "heldout", "skip")
    assert (job.kind, job.queue, job.params["evaluation_id"]) == (
        "evaluation",
        "gpu",
        evaluation.id,
    )
    fake_container.job_runtime.execute(job.id, job.celery_task_id, "test-worker")
    with fake_container.session_factory() as session:
        job = session.get(Job, job.id)
        evaluation = session.get(Evaluation, evaluation.id)
    assert job.state == "succeeded", job.error
    assert job.result["evaluation_id"] == evaluation.id and evaluation.state == "succeeded"
    assert evaluation.job_id == job.id and evaluation.metrics["f1"] == job.result["f1"]


def test_another_users_set_is_not_found(fake_container) -> None:  # type: ignore[no-untyped-def]
    _, set_id, base_id = _world(fake_container)
    other = _user(fake_container, "other")
    with fake_container.session_factory() as session, pytest.raises(Exception) as err:
        fake_container.evaluations.create_job(session, other, base_id, set_id)
    assert http_status(err.value) == 404


def test_unknown_setting_is_refused(fake_container) -> None:  # type: ignore[no-untyped-def]
    _, set_id, base_id = _world(fake_container)
    with pytest.raises(InvalidInput):
        fake_container.evaluations.run(base_id, set_id, {"setting": "sideways"})


def test_post_training_hook_evaluates_candidate_and_active_on_gate_set(  # type: ignore[no-untyped-def]
    settings_factory, fake, tmp_path
) -> None:
    from app.model_services import ModelLoading
    from app.wiring import build_container

    settings = settings_factory(
        caption=_fake_caption(fake),
        evaluation={"gate_set": "heldout", "gate_margin_f1": 1.0},
    )
    ctr = build_container(settings, ModelLoading.ALL)
    try:
        _, _, base_id = _world(ctr)
        version_id = _candidate(ctr, tmp_path)
        out = ctr.evaluations.post_training(version_id, None)
        assert {(e["version_id"], e["setting"]) for e in out["evaluations"]} == {
            (version_id, "skip"),
            (base_id, "skip"),
        }
        assert out["gate"]["allowed"] is True
    finally:
        ctr.close()


# --------------------------------------------------------------------------- scoring


@pytest.mark.nodb
def test_slot_outcomes_sum_to_the_metric_counts() -> None:
    records = [
        (["bo"], "<bo> naps."),
        (["bo", "anya"], "<anya> and a dog"),
        (["anya"], "<bo> runs"),
        (["Bo"], "nobody here"),
    ]
    per = slot_outcomes(records, case_sensitive=False, mode="paper")
    outcomes = [o for p in per for o in p["slots"].values()]
    metric = grounding_metrics([{"image": "", "names": n, "caption": c} for n, c in records])
    assert (outcomes.count("correct"), outcomes.count("miss"), outcomes.count("none")) == (
        metric.correct,
        metric.miss,
        metric.none,
    )
    assert per[2] == {"mentioned": ["bo"], "slots": {"anya": "miss"}}


# --------------------------------------------------------------------------- gate


def _version(vid: int, results: dict[str, dict[str, Any]] | None = None) -> ModelVersion:
    return ModelVersion(
        id=vid, name=f"n{vid}", base_model="m", evaluation={"results": results or {}}
    )


def _res(
    f1: float, set_name: str = "dreambooth", setting: str = "skip", at: str = "2025-01-01"
) -> dict[str, Any]:
    return {"set": set_name, "setting": setting, "f1": f1, "at": at, "lower_is_better": False}


@pytest.mark.nodb
def test_gate_refuses_a_drop_beyond_the_margin_with_the_numbers() -> None:
    cfg = EvaluationSettings(gate_margin_f1=1.0, gate_set="dreambooth")
    candidate = _version(3, {"dreambooth/skip": _res(82.1)})
    active = _version(1, {"dreambooth/skip": _res(90.4)})
    decision = gate_check(None, candidate, active, cfg)  # type: ignore[arg-type]
    assert not decision.allowed
    assert "v3 F1 82.1 < active v1 F1 90.4 - 1.0 on set 'dreambooth'" in decision.reason
    with pytest.raises(GateRefused) as err:
        EvaluationGate(cfg)(None, candidate, active)  # type: ignore[arg-type]
    assert http_status(err.value) == 409 and "82.1" in err.value.detail


@pytest.mark.nodb
def test_gate_allows_a_drop_within_the_margin() -> None:
    cfg = EvaluationSettings(gate_margin_f1=1.0, gate_set="dreambooth")
    decision = gate_check(
        None,  # type: ignore[arg-type]
        _version(3, {"dreambooth/skip": _res(89.5)}),
        _version(1, {"dreambooth/skip": _res(90.4)}),
        cfg,
    )
    assert decision.allowed and decision.candidate_f1 == 89.5


@pytest.mark.nodb
def test_gate_refuses_a_candidate_never_evaluated_on_the_gate_set() -> None:
    cfg = EvaluationSettings(gate_set="dreambooth")
    decision = gate_check(
        None,  # type: ignore[arg-type]
        _version(3, {"other/skip": _res(99, "other")}),
        _version(1, {"dreambooth/skip": _res(90.4)}),
        cfg,
    )
    assert not decision.allowed and "no evaluation on set 'dreambooth'" in decision.reason


@pytest.mark.nodb
def test_gate_without_gate_set_uses_the_latest_common_set() -> None:
    cfg = EvaluationSettings(gate_set="")
    candidate = _version(
        3, {"old/skip": _res(10, "old", at="2024"), "new/skip": _res(95, "new", at="2025")}
    )
    active = _version(
        1,
        {
            "old/skip": _res(90, "old", at="2024"),
            "new/skip": _res(94, "new", at="2025"),
            "new/wrong": {**_res(1, "new", "wrong"), "lower_is_better": True},
        },
    )
    decision = gate_check(None, candidate, active, cfg)  # type: ignore[arg-type]
    assert decision.allowed and decision.set_name == "new"
    assert gate_check(None, _version(3), active, cfg).allowed is False  # type: ignore[arg-type]
    assert gate_check(None, _version(3), _version(1), cfg).allowed is True  # type: ignore[arg-type]


async def test_activation_is_gated_and_force_is_recorded(fake_container, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake_container.settings.evaluation.gate_set = "dreambooth"
    versions = fake_container.versions
    assert isinstance(versions.gate, EvaluationGate)
    admin = _user(fake_container)
    version_id = _candidate(fake_container, tmp_path)
    with fake_container.session_factory() as session:
        base = versions.ensure_base(session)
        base.evaluation = {"results": {"dreambooth/skip": _res(90.4)}}
        candidate = session.get(ModelVersion, version_id)
        candidate.evaluation = {"results": {"dreambooth/skip": _res(82.1)}}
        session.commit()
        with pytest.raises(GateRefused) as err:
            await versions.activate(session, version_id, admin)
        assert f"v{version_id} F1 82.1 < active v{base.id} F1 90.4 - 1.0" in err.value.detail
        assert versions.active(session).id == base.id
        assert "forced_activations" not in candidate.evaluation
        # activate(force=True) itself must record the override (the gate's forced()).
        await versions.activate(session, version_id, admin, force=True)
    with fake_container.session_factory() as session:
        candidate = session.get(ModelVersion, version_id)
        assert candidate.state == "active"
        forced = candidate.evaluation.get("forced_activations")
        assert forced is not None and len(forced) == 1
        assert forced[0]["by"] == "root" and forced[0]["gate"]["allowed"] is False
        assert forced[0]["active_version_id"] == base.id
