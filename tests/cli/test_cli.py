"""The `repic` operator commands: users, models, index upkeep, captions, training arguments."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import app
from tests.utils.images import FIXTURES

runner = CliRunner()
DOG = FIXTURES / "dreambooth" / "dog"


@pytest.fixture
def cli_settings(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    return settings


def _admin(password: str = "correct horse battery") -> None:
    r = runner.invoke(app, ["users", "create-admin", "root", "--password", password])
    assert r.exit_code == 0, r.output


def test_create_admin_makes_an_admin(cli_settings) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.models import User
    from app.wiring import build_container

    _admin()
    container = build_container(cli_settings)
    with container.session_factory() as session:
        assert session.scalar(select(User.is_admin).where(User.username == "root")) is True
    container.close()


def test_create_admin_refuses_a_short_password(cli_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["users", "create-admin", "root", "--password", "short"])
    assert r.exit_code == 2 and "at least 8" in r.output


def test_caption_command_uses_the_users_pinned_concept(cli_settings) -> None:  # type: ignore[no-untyped-def]
    from app.model_services import ModelLoading
    from app.services.concepts import Upload
    from app.services.users import register
    from app.wiring import build_container

    container = build_container(cli_settings, ModelLoading.ALL)
    with container.session_factory() as session:
        user = register(session, "anya", "correct horse battery")
        session.commit()
        container.concepts.create(
            session,
            user,
            name="bo",
            uploads=[Upload((DOG / "02.jpg").read_bytes(), "a.jpg", "image/jpeg")],
        )
    container.close()
    r = runner.invoke(
        app,
        [
            "caption",
            str(DOG / "03.jpg"),
            "--user",
            "anya",
            "--concept",
            "bo",
            "--no-retrieve",
            "--max-new-tokens",
            "4",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout[r.stdout.index("{") :])
    assert [c["name"] for c in body["concepts"]] == ["bo"] and body["tiny_model"] is True


def test_caption_command_with_an_unknown_concept_fails_clearly(cli_settings) -> None:  # type: ignore[no-untyped-def]
    _admin()
    r = runner.invoke(app, ["caption", str(DOG / "03.jpg"), "--user", "root", "--concept", "rex"])
    assert r.exit_code == 2 and "No concept named rex" in r.output


def test_index_verify_and_rebuild(cli_settings) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["index", "verify"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["vectors"] == 0
    r = runner.invoke(app, ["index", "rebuild"])
    assert r.exit_code == 0 and "rebuilt index with 0 vectors" in r.output


def test_train_needs_a_config_or_tiny() -> None:
    r = runner.invoke(app, ["train"])
    assert r.exit_code == 2 and "--config" in r.output


def test_build_tiny_writes_the_three_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["models", "build-tiny", str(tmp_path), "--no-copier"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in tmp_path.iterdir()} == {"vlm", "clip", "detector"}


def test_build_tiny_makes_the_vlm_a_name_copier_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from trainer.tiny_copier import COPIER_VERSION

    r = runner.invoke(app, ["models", "build-tiny", str(tmp_path), "--warm-up-steps", "2"])
    assert r.exit_code == 0, r.output
    marker = json.loads((tmp_path / "vlm" / "repic_tiny.json").read_text())
    assert marker["copier"] == COPIER_VERSION and marker["recipe"]["steps"] == 2


def test_serve_runs_uvicorn_without_its_server_banner(settings_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    settings = settings_factory(worker={"embedded_worker": False})
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: calls.append(kwargs))
    r = runner.invoke(app, ["serve", "--no-migrate"])
    assert r.exit_code == 0, r.output
    (kwargs,) = calls
    assert kwargs["server_header"] is False


def _unreachable_database(settings_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.server import free_port

    url = f"postgresql+psycopg://repic:db-pass-123@127.0.0.1:{free_port()}/repic"
    settings = settings_factory(database={"url": url}, worker={"embedded_worker": False})
    monkeypatch.setattr("app.cli.get_settings", lambda: settings)


def test_serve_with_an_unreachable_database_is_one_line(settings_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    _unreachable_database(settings_factory, monkeypatch)
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: pytest.fail("uvicorn started"))
    r = runner.invoke(app, ["serve", "--no-migrate"])
    assert r.exit_code == 2
    (line,) = r.output.strip().splitlines()
    assert "REPIC_DATABASE__URL" in line and "db-pass-123" not in line


def test_worker_with_an_unreachable_database_is_one_line(settings_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _unreachable_database(settings_factory, monkeypatch)
    r = runner.invoke(app, ["worker", "--queues", "cpu"])
    assert r.exit_code == 2
    (line,) = r.output.strip().splitlines()
    assert "REPIC_DATABASE__URL" in line and "db-pass-123" not in line
