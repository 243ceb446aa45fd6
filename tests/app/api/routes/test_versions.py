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
