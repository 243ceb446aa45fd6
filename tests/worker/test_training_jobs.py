"""Training jobs on a real Celery worker subprocess (embedded SQLite broker), tiny model.

API call -> gpu-queue job runs the tiny trainer -> progress visible through the API -> candidate
registered -> activation -> the next caption reports the new version and the adapter is applied.
Also: cancel of a running job, and a worker SIGKILLed mid-job ends failed through the reaper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.celery_worker import start_worker, wait_for
from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import make_admin

pytestmark = pytest.mark.slow

TINY_RUN = {"num_generations": 2, "prompts_per_step": 1, "max_completion_length": 8,
            "num_concept_records": 6, "lora_r": 4, "lora_alpha": 8, "learning_rate": 0.05,
            "torch_threads": 1}


@pytest.fixture
def settings(settings_factory):  # type: ignore[no-untyped-def]
    return settings_factory(worker={"heartbeat_s": 1, "stale_after_s": 4, "max_attempts": 1})


def _start_training(client: Any, admin: dict[str, str], max_steps: int) -> int:
    create_concept(client, admin, "bo", use_for_training="true",
                   images=[make_image(shape=i) for i in range(3)])
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"dataset": "concepts", "overrides": {**TINY_RUN,
                                                               "max_steps": max_steps}})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _job(client: Any, admin: dict[str, str], job_id: int) -> dict[str, Any]:
    r = client.get(f"/api/jobs/{job_id}", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_retrain_activate_and_caption_with_the_new_version(client, settings) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    worker = start_worker(settings, varied_reward=True)
    try:
        job_id = _start_training(client, admin, max_steps=3)
        seen_running: list[dict[str, Any]] = []

        def finished() -> dict[str, Any] | None:
            job = _job(client, admin, job_id)
            if job["state"] == "running" and job["step"] > 0:
                seen_running.append(job)
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(finished, 180, "the training job to finish", worker)
    finally:
        worker.stop()
    assert job["state"] == "succeeded", job["error"] or job["log_tail"]
    assert seen_running, "progress was never visible while the job ran"
    assert seen_running[0]["total_steps"] == 3 and seen_running[0]["eta_s"] is not None
    assert [h["step"] for h in job["history"]] == [1, 2, 3]
    assert job["attempts"] == 1 and job["worker"]
    version_id = job["result"]["version_id"]
    adapter_dir = Path(job["result"]["adapter_path"])
    assert adapter_dir.parent == settings.adapters_dir
    assert (adapter_dir / "adapter_config.json").is_file()

    versions = client.get("/api/model-versions", headers=admin).json()["data"]
    states = {v["id"]: v["state"] for v in versions}
    assert states[version_id] == "candidate"
    assert [v["state"] for v in versions if v["name"] == "base"] == ["active"]

    r = client.post(f"/api/model-versions/{version_id}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "active"

    backend = client.app.state.container.models.loaded_backend()
    name = f"v{version_id}"
    assert name in backend.adapters
    # The trained LoRA really moved away from zero, so the adapter changes the model.
    lora_b = [p for n, p in backend._model.named_parameters() if f"lora_B.{name}." in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b)

    concept_id = client.get("/api/concepts", headers=admin).json()["data"][0]["id"]
    r = client.post("/api/captions", headers=admin,
                    files={"image": ("q.png", make_image(shape=1), "image/png")},
                    data={"concept_ids": str(concept_id), "retrieve": "false",
                          "max_new_tokens": "4"})
    assert r.status_code == 201, r.text
    assert r.json()["model_version"]["id"] == version_id


def test_cancel_stops_a_running_job_at_the_next_step(client, settings) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    worker = start_worker(settings)
    try:
        job_id = _start_training(client, admin, max_steps=60)
        wait_for(lambda: _job(client, admin, job_id)["step"] >= 1, 180, "the first step",
                 worker)
        r = client.post(f"/api/jobs/{job_id}/cancel", headers=admin)
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        job = wait_for(lambda: (j := _job(client, admin, job_id))["state"] != "running" and j,
                       120, "the job to stop", worker)
    finally:
        worker.stop()
    assert job["state"] == "cancelled", job["error"]
    assert job["step"] < 60
    assert (Path(job["result"]["adapter_dir"]) / "adapter_config.json").is_file()


def test_killed_worker_leaves_the_job_failed_not_running(client, settings) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    first = start_worker(settings)
    try:
        job_id = _start_training(client, admin, max_steps=200)
        wait_for(lambda: _job(client, admin, job_id)["step"] >= 1, 180, "the first step", first)
    finally:
        first.kill()
    assert _job(client, admin, job_id)["state"] == "running"
    # Any other worker's reaper notices the silence; nobody cleans up by hand.
    second = start_worker(settings)
    try:
        job = wait_for(lambda: (j := _job(client, admin, job_id))["state"] != "running" and j,
                       60, "the reaper", second)
    finally:
        second.stop()
    assert job["state"] == "failed"
    assert "heart-beating" in job["error"] or "gave up" in job["error"]
