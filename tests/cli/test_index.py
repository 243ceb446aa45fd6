"""`repic index verify`: the cache, a running app's index and the photo files, against the DB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import app
from app.db import make_engine, make_session_factory, session_scope
from app.models import ConceptImage, ImageEmbedding
from app.services.users import create_admin
from app.settings import Settings
from tests.utils.images import make_image
from tests.utils.server import LiveServer

runner = CliRunner()


@pytest.fixture
def cli_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


@pytest.fixture
def server(cli_settings: Settings) -> Iterator[LiveServer]:
    cli_settings.data_dir.mkdir(parents=True, exist_ok=True)
    with LiveServer(cli_settings) as live:
        yield live


def _session(settings: Settings) -> Any:
    return session_scope(make_session_factory(make_engine(settings.database_url)))


def _admin_token(server: LiveServer, settings: Settings) -> str:
    with _session(settings) as session:
        create_admin(session, "root", "root-password-1")
    r = httpx.post(f"{server.url}/api/auth/token",
                   data={"username": "root", "password": "root-password-1"})
    return str(r.json()["access_token"])


def _concept(server: LiveServer, token: str) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/api/concepts", headers={"Authorization": f"Bearer {token}"},
                   data={"name": "bo"},
                   files=[("images", ("a.png", make_image(shape=i), "image/png")) for i in (0, 1)],
                   timeout=60)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _verify(*args: str) -> tuple[int, dict[str, Any]]:
    r = runner.invoke(app, ["index", "verify", *args])
    return r.exit_code, json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}


def test_verify_compares_the_running_apps_index_with_the_database(server: LiveServer,
                                                                  cli_settings: Settings) -> None:
    token = _admin_token(server, cli_settings)
    _concept(server, token)
    code, report = _verify("--app", server.url, "--token", token)
    assert (code, report["problems"]) == (0, [])
    assert report["app"]["vectors"] == 2


def test_verify_sees_an_app_index_that_drifted_from_the_database(server: LiveServer,
                                                                 cli_settings: Settings) -> None:
    token = _admin_token(server, cli_settings)
    concept = _concept(server, token)
    with _session(cli_settings) as session:  # a vector added behind the app's back
        image = session.get(ConceptImage, concept["images"][0]["id"])
        embedder = session.scalars(select(ImageEmbedding.embedder_id)).first()
        extra = ConceptImage(concept_id=concept["id"], owner_id=image.owner_id, sha256="0" * 64,
                             path=image.path, width=1, height=1, format="PNG", bytes=1)
        session.add(extra)
        session.flush()
        vector = np.zeros(8, dtype=np.float32)
        session.add(ImageEmbedding(image_id=extra.id, owner_id=image.owner_id,
                                   embedder_id=embedder, dim=8, vector=vector.tobytes()))
    code, report = _verify("--app", server.url, "--token", token)
    assert code == 1
    assert any("app index: owner" in p and "2 vectors, the database 3" in p
               for p in report["problems"])


def test_verify_reports_a_photo_whose_file_is_missing(server: LiveServer,
                                                      cli_settings: Settings) -> None:
    token = _admin_token(server, cli_settings)
    concept = _concept(server, token)
    with _session(cli_settings) as session:
        path = session.get(ConceptImage, concept["images"][0]["id"]).path
    (cli_settings.images_dir / path).unlink()
    code, report = _verify()
    assert code == 1
    assert f"missing file: {path}" in report["problems"]


def test_verify_without_a_token_for_the_app_is_an_operator_error(cli_settings: Settings) -> None:
    r = runner.invoke(app, ["index", "verify", "--app", "http://127.0.0.1:1"],
                      env={"REPIC_ADMIN_TOKEN": ""})
    assert r.exit_code == 2
