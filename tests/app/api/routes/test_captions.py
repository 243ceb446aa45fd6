"""Captions end to end with tiny models: pinned (skip-retrieval) and retrieved concepts."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.fake_vllm import FakeVLLM
from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo, make_image
from tests.utils.users import register


def _photo(subject: str, index: int) -> tuple[str, tuple[str, bytes, str]]:
    return ("image", (f"{subject}{index}.jpg", fixture_photo(subject, index), "image/jpeg"))


def _concepts(client, headers):
    bo = create_concept(
        client,
        headers,
        "bo",
        [fixture_photo("dog", 0), fixture_photo("dog", 1)],
        description="our corgi",
        category="dog",
    )
    mia = create_concept(
        client, headers, "mia", [fixture_photo("cat", 0)], description="a grey cat", category="cat"
    )
    return bo, mia


@pytest.fixture
def anya(client):
    return register(client, "anya")


def test_caption_with_pinned_concepts(client, anya) -> None:
    bo, mia = _concepts(client, anya)
    r = client.post(
        "/api/captions",
        headers=anya,
        files=[_photo("dog", 2)],
        data={"concept_ids": [str(mia["id"]), str(bo["id"])], "retrieve": "false"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(c["name"], c["pinned"]) for c in body["concepts"]] == [("mia", True), ("bo", True)]
    assert body["tiny_model"] is True
    assert body["backend"] == "inprocess"
    assert body["completion_tokens"] > 0
    assert set(body["timings_ms"]) >= {"retrieve", "generate", "total"}


def test_caption_with_retrieved_concepts(client, anya) -> None:
    _concepts(client, anya)
    r = client.post("/api/captions", headers=anya, files=[_photo("dog", 1)])
    assert r.status_code == 201, r.text
    first = r.json()["concepts"][0]
    assert first["name"] == "bo" and first["pinned"] is False
    assert first["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(first["box"]) == 4


def _strip_concept(client, headers):
    """A concept whose photo Qwen's processor refuses as it is (aspect ratio 400)."""
    return create_concept(client, headers, "strip", [make_image(size=(20, 8000))])


def test_photo_stored_with_an_extreme_aspect_ratio_can_be_pinned(client, anya) -> None:
    strip = _strip_concept(client, anya)
    r = client.post(
        "/api/captions",
        headers=anya,
        files=[_photo("dog", 2)],
        data={"concept_ids": str(strip["id"]), "retrieve": "false"},
    )
    assert r.status_code == 201, r.text
    assert [c["name"] for c in r.json()["concepts"]] == ["strip"]


def test_photo_stored_with_an_extreme_aspect_ratio_can_be_retrieved(client, anya) -> None:
    _strip_concept(client, anya)
    query = make_image(size=(20, 8000))  # also the query: it retrieves its own concept
    r = client.post("/api/captions", headers=anya, files=[("image", ("q.png", query, "image/png"))])
    assert r.status_code == 201, r.text
    assert r.json()["concepts"][0]["name"] == "strip"
    assert (r.json()["width"], r.json()["height"]) == (20, 8000)


def test_pinned_concept_of_another_user_is_404(client, anya) -> None:
    bo, _ = _concepts(client, anya)
    boris = register(client, "boris")
    r = client.post(
        "/api/captions",
        headers=boris,
        files=[_photo("dog", 2)],
        data={"concept_ids": str(bo["id"])},
    )
    assert r.status_code == 404
    assert client.get("/api/captions", headers=boris).json()["count"] == 0


def test_captions_are_listed_and_accept_feedback(client, anya) -> None:
    _concepts(client, anya)
    made = client.post("/api/captions", headers=anya, files=[_photo("cat", 0)]).json()
    listed = client.get("/api/captions", headers=anya).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == made["id"]
    r = client.patch(
        f"/api/captions/{made['id']}",
        headers=anya,
        json={"feedback": "edited", "edited_caption": "<mia> sleeps."},
    )
    assert r.json()["feedback"] == "edited" and r.json()["edited_caption"] == "<mia> sleeps."
    bad = client.patch(f"/api/captions/{made['id']}", headers=anya, json={"feedback": "meh"})
    assert bad.status_code == 422
    assert client.get(made["image_url"], headers=anya).status_code == 200


def test_max_new_tokens_zero_is_422_and_stores_nothing(client, anya) -> None:
    r = client.post(
        "/api/captions", headers=anya, files=[_photo("cat", 0)], data={"max_new_tokens": "0"}
    )
    assert r.status_code == 422 and "max_new_tokens" in r.json()["detail"]
    assert client.get("/api/captions", headers=anya).json()["count"] == 0


@pytest.mark.parametrize("feedback", ["none", "accepted", "rejected"])
def test_feedback_other_than_edited_forgets_the_edited_caption(client, anya, feedback) -> None:
    made = client.post("/api/captions", headers=anya, files=[_photo("cat", 0)]).json()
    url = f"/api/captions/{made['id']}"
    client.patch(url, headers=anya, json={"feedback": "edited", "edited_caption": "<mia> naps."})
    r = client.patch(url, headers=anya, json={"feedback": feedback})
    assert r.status_code == 200
    assert (r.json()["feedback"], r.json()["edited_caption"]) == (feedback, None)
    assert client.get(url, headers=anya).json()["edited_caption"] is None


def test_edited_caption_without_edited_feedback_is_422(client, anya) -> None:
    made = client.post("/api/captions", headers=anya, files=[_photo("cat", 0)]).json()
    r = client.patch(
        f"/api/captions/{made['id']}",
        headers=anya,
        json={"feedback": "accepted", "edited_caption": "<mia> naps."},
    )
    assert r.status_code == 422 and "edited_caption" in r.json()["detail"]
    assert client.get(f"/api/captions/{made['id']}", headers=anya).json()["feedback"] == "none"


def test_other_users_caption_is_404(client, anya) -> None:
    _concepts(client, anya)
    made = client.post("/api/captions", headers=anya, files=[_photo("cat", 0)]).json()
    boris = register(client, "boris")
    assert client.get(f"/api/captions/{made['id']}", headers=boris).status_code == 404
    assert client.get(made["image_url"], headers=boris).status_code == 404


def test_bad_photo_is_refused(client, anya) -> None:
    r = client.post(
        "/api/captions", headers=anya, files=[("image", ("x.jpg", b"not a photo", "image/jpeg"))]
    )
    assert r.status_code == 422


def _openai_client(settings_factory, base_url: str, model: str):
    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    settings = settings_factory(
        caption={
            "backend": "openai",
            "openai_base_urls": [base_url],
            "model": model,
            "max_retries": 1,
            "timeout_s": 5,
        }
    )
    container = build_container(settings, ModelLoading.ALL)
    return container, TestClient(create_app(container=container))


def test_prompt_sent_to_the_server_holds_the_demonstrations_in_order(settings_factory) -> None:
    with FakeVLLM() as server:
        container, client = _openai_client(settings_factory, server.base_url, server.model)
        with client:
            headers = register(client, "anya")
            bo, mia = _concepts(client, headers)
            r = client.post(
                "/api/captions",
                headers=headers,
                files=[_photo("dog", 2)],
                data={
                    "concept_ids": [str(bo["id"]), str(mia["id"])],
                    "retrieve": "false",
                    "question": "Who is here?",
                },
            )
            assert r.status_code == 201, r.text
        container.close()
        sent = server.chat_requests[-1]
    assert sent["model"] == server.model
    system, user = sent["messages"]
    assert system["role"] == "system" and "captioning assistant" in system["content"]
    kinds = [part["type"] for part in user["content"]]
    assert kinds == ["image_url", "text", "image_url", "text", "image_url", "text"]
    texts = [p["text"] for p in user["content"] if p["type"] == "text"]
    assert texts == [
        "1. Name: <bo>, Info: our corgi",
        "2. Name: <mia>, Info: a grey cat",
        "This is the query image. Who is here?",
    ]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/")


def test_photo_with_an_extreme_aspect_ratio_reaches_the_server_padded(settings_factory) -> None:
    from app.ml.images import MAX_ASPECT_RATIO

    with FakeVLLM() as server:
        container, client = _openai_client(settings_factory, server.base_url, server.model)
        with client:
            headers = register(client, "anya")
            strip = _strip_concept(client, headers)
            r = client.post(
                "/api/captions",
                headers=headers,
                files=[_photo("dog", 2)],
                data={"concept_ids": str(strip["id"]), "retrieve": "false"},
            )
            assert r.status_code == 201, r.text
        container.close()
        sent = server.chat_requests[-1]
    url = sent["messages"][1]["content"][0]["image_url"]["url"]
    reference = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert reference.height / reference.width <= MAX_ASPECT_RATIO


def test_backend_down_is_503_and_stores_nothing(settings_factory) -> None:
    from tests.utils.server import free_port

    container, client = _openai_client(
        settings_factory, f"http://127.0.0.1:{free_port()}", "base-model"
    )
    with client:
        headers = register(client, "anya")
        _concepts(client, headers)
        files_before = {p for p in container.store.root.rglob("*") if p.is_file()}
        r = client.post("/api/captions", headers=headers, files=[_photo("dog", 2)])
        assert r.status_code == 503
        assert "unavailable" in r.json()["detail"]
        assert client.get("/api/captions", headers=headers).json()["count"] == 0
        assert {p for p in container.store.root.rglob("*") if p.is_file()} == files_before
    container.close()


def test_control_characters_from_the_model_are_stripped_before_storing(settings_factory) -> None:
    with FakeVLLM(completion_text="<bo>\x00 sits\x1b on the grass.\r\n") as server:
        container, client = _openai_client(settings_factory, server.base_url, server.model)
        with client:
            headers = register(client, "anya")
            r = client.post("/api/captions", headers=headers, files=[_photo("dog", 2)])
            assert r.status_code == 201, r.text
            assert r.json()["caption"] == "<bo> sits on the grass."
            stored = client.get("/api/captions", headers=headers).json()["data"][0]
            assert stored["caption"] == "<bo> sits on the grass."
        container.close()


def test_a_caption_without_a_known_concept_says_so(client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.concepts import create_concept
    from tests.utils.images import make_image
    from tests.utils.users import register

    anya = register(client, "anya")
    create_concept(client, anya, "bo", images=[make_image(shape=0)])
    r = client.post("/api/captions", headers=anya, data={"min_score": "1.0"},
                    files={"image": ("q.png", make_image(color=(10, 200, 90), shape=1),
                                     "image/png")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["concepts"], body["note"]) == ([], "no known concept found")
    assert body["retrieval"]["threshold_source"] == "request"
