"""/api/model-versions: anyone lists; only admins activate or roll back."""

from __future__ import annotations

from tests.utils.users import make_admin, register


def test_list_shows_the_active_base_version(client) -> None:  # type: ignore[no-untyped-def]
    user = register(client, "anya")
    body = client.get("/api/model-versions", headers=user).json()
    assert body["count"] == 1
    assert body["data"][0]["name"] == "base" and body["data"][0]["state"] == "active"


def test_non_admin_cannot_activate_or_roll_back(client) -> None:  # type: ignore[no-untyped-def]
    user = register(client, "anya")
    base = client.get("/api/model-versions", headers=user).json()["data"][0]
    assert client.post(f"/api/model-versions/{base['id']}/activate",
                       headers=user).status_code == 403
    assert client.post("/api/model-versions/rollback", headers=user).status_code == 403


def test_activate_unknown_version_is_404(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    assert client.post("/api/model-versions/999/activate", headers=admin).status_code == 404


def test_rollback_without_earlier_version_is_409(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    assert client.post("/api/model-versions/rollback", headers=admin).status_code == 409


def test_activating_a_broken_adapter_keeps_base_and_says_why(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    container = client.app.state.container
    with container.session_factory() as session:
        version = container.versions.register_candidate(
            session, name="broken", adapter_path=str(tmp_path / "missing"),
            base_model="m", training_job_id=None, config={}, data_summary={})
        vid = version.id
    r = client.post(f"/api/model-versions/{vid}/activate", headers=admin)
    assert r.status_code == 502
    assert "base stays active" in r.json()["detail"]
    states = {v["name"]: v["state"]
              for v in client.get("/api/model-versions", headers=admin).json()["data"]}
    assert states == {"base": "active", "broken": "candidate"}


def test_an_imported_adapter_is_activated_used_and_rolled_back(client, tiny_models,  # type: ignore[no-untyped-def]
                                                                tmp_path) -> None:
    from tests.utils.adapters import LANGUAGE_ONLY, save_tiny_lora
    from tests.utils.images import make_image

    folder = save_tiny_lora(tiny_models / "vlm", tmp_path / "repic-lora", LANGUAGE_ONLY)
    admin = make_admin(client, "root")
    r = client.post("/api/model-versions/import", headers=admin,
                    json={"source": str(folder), "name": "repic-lora"})
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    assert (version["state"], r.json()["notes"]) == ("candidate", [])
    # The same gate as a trained candidate's (none is configured here: evaluation.gate_set).
    r = client.post(f"/api/model-versions/{version['id']}/activate", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "active", r.text
    caption = client.post("/api/captions", headers=admin,
                          files={"image": ("q.png", make_image(), "image/png")})
    assert caption.status_code == 201, caption.text
    assert caption.json()["model_version"]["id"] == version["id"]
    r = client.post("/api/model-versions/rollback", headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "base"


def test_importing_a_folder_that_is_no_adapter_is_422(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    r = client.post("/api/model-versions/import", headers=admin,
                    json={"source": str(tmp_path)})
    assert r.status_code == 422
    assert "adapter_config.json" in r.json()["detail"]


def test_only_admins_import_versions(client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user = register(client, "anya")
    r = client.post("/api/model-versions/import", headers=user, json={"source": str(tmp_path)})
    assert r.status_code == 403
