"""/api/admin: training jobs (validation, 403, broker down = 503 with nothing created)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from sqlalchemy import func, select

from app.models import Job
from tests.utils.concepts import create_concept
from tests.utils.server import free_port
from tests.utils.users import make_admin, register

TINY = {"max_steps": 2, "num_generations": 2, "prompts_per_step": 1}


def _job_count(client) -> int:  # type: ignore[no-untyped-def]
    with client.app.state.container.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_non_admin_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    headers = register(client, "anya")
    r = client.post("/api/admin/training-jobs", headers=headers, json={"dataset": "concepts"})
    assert r.status_code == 403
    assert client.get("/api/admin/datasets", headers=headers).status_code == 403
    assert _job_count(client) == 0


def test_training_job_is_queued_on_gpu(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"dataset": "concepts", "overrides": TINY})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["kind"], job["state"], job["queue"]) == ("training", "queued", "gpu")
    assert job["params"]["overrides"] == TINY


def test_unknown_override_is_422_naming_the_key(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"overrides": {"learnin_rate": 0.1}})
    assert r.status_code == 422
    assert "learnin_rate" in r.json()["detail"]
    assert _job_count(client) == 0


def test_badly_typed_override_is_422_naming_the_key(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"overrides": {"max_steps": "many"}})
    assert r.status_code == 422 and "max_steps" in r.json()["detail"]


def test_server_owned_override_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"overrides": {"output_dir": "/tmp/x"}})
    assert r.status_code == 422 and "output_dir" in r.json()["detail"]


def test_no_opted_in_concept_is_422(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo")  # not opted in
    r = client.post("/api/admin/training-jobs", headers=admin, json={"dataset": "concepts"})
    assert r.status_code == 422 and "opted in" in r.json()["detail"]


def test_dataset_upload_then_training_on_file(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    admin = make_admin(client, "root")
    data_dir = client.app.state.container.settings.data_dir
    Image.new("RGB", (40, 40), (200, 30, 30)).save(data_dir / "q.png")
    record = {"image": ["q.png"], "problem": "Is <bo> in the image? Answer yes or no.",
              "solution": "yes", "task": "oct"}
    files = {"file": ("set.jsonl", json.dumps(record).encode() + b"\n", "application/json")}
    r = client.post("/api/admin/datasets", headers=admin, files=files)
    if r.status_code == 422:
        pytest.fail(f"record format rejected: {r.text}")
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["records"] == 1
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"dataset": "file", "dataset_id": dataset["id"], "overrides": TINY})
    assert r.status_code == 201, r.text
    assert r.json()["params"]["dataset_name"] == "set.jsonl"


def test_bad_dataset_file_is_422_and_not_kept(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    files = {"file": ("set.jsonl", b'{"image": "nope.png", "task": "oct"}\n', "text/plain")}
    r = client.post("/api/admin/datasets", headers=admin, files=files)
    assert r.status_code == 422
    assert client.get("/api/admin/datasets", headers=admin).json()["count"] == 0


@pytest.fixture
def own_redis():  # type: ignore[no-untyped-def]
    """A private redis-server (never the shared one), so the test may stop it."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def test_broker_down_answers_503_and_creates_nothing(settings_factory, own_redis) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    proc, url = own_redis
    container = build_container(settings_factory(worker={"broker_url": url}), ModelLoading.ALL)
    try:
        with TestClient(create_app(container=container)) as client:
            admin = make_admin(client, "root")
            create_concept(client, admin, "bo", use_for_training="true")
            proc.terminate()
            proc.wait(timeout=10)
            started = time.monotonic()
            r = client.post("/api/admin/training-jobs", headers=admin,
                            json={"overrides": TINY})
            elapsed = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert elapsed < 10
            assert _job_count(client) == 0
    finally:
        container.close()


@pytest.mark.parametrize("steps", [-1, 0])
def test_max_steps_override_below_one_is_422(client, steps: int) -> None:  # type: ignore[no-untyped-def]
    # -1 means "train num_train_epochs epochs" to the trainer: never what an override asks for.
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"overrides": {**TINY, "max_steps": steps}})
    assert r.status_code == 422 and "max_steps" in r.json()["detail"]
    assert _job_count(client) == 0


def test_consented_feedback_alone_is_training_data(client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.images import fixture_photo

    admin = make_admin(client, "root")
    concept = create_concept(client, admin, "bo")  # not opted in
    r = client.post("/api/captions", headers=admin, data={"concept_ids": str(concept["id"]),
                    "retrieve": "false", "max_new_tokens": "4"},
                    files={"image": ("q.jpg", fixture_photo("dog", 2), "image/jpeg")})
    assert r.status_code == 201, r.text
    caption = r.json()
    edited = "<bo> is asleep on the sofa in the afternoon sun, one ear folded back, tail still."
    r = client.patch(f"/api/captions/{caption['id']}", headers=admin,
                     json={"feedback": "edited", "edited_caption": edited})
    assert r.status_code == 200, r.text
    r = client.post("/api/admin/training-jobs", headers=admin, json={"dataset": "concepts"})
    assert r.status_code == 422  # the owner has not allowed their feedback to train
    client.patch("/api/auth/me", headers=admin, json={"allow_feedback_training": True})
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"dataset": "concepts", "overrides": TINY})
    assert r.status_code == 201, r.text
    assert r.json()["params"]["feedback_at_creation"] == 1
