"""docs/configuration.md is generated from app.settings and must stay in sync with it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from app.config_docs import all_env_vars, render_configuration_markdown, type_name
from app.settings import Settings

pytestmark = pytest.mark.nodb

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def _expected_env_vars(model: type[BaseModel], prefix: str) -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _expected_env_vars(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_configuration_doc_is_in_sync_with_settings() -> None:
    committed = CONFIG_DOC.read_text(encoding="utf-8") if CONFIG_DOC.exists() else ""
    assert committed == render_configuration_markdown(), (
        "docs/configuration.md is out of date with app/settings.py: run `make docs-config` "
        "(repic config docs > docs/configuration.md) and commit the result"
    )


def test_every_setting_is_documented_with_its_env_var() -> None:
    expected = _expected_env_vars(Settings, "REPIC_")
    page = render_configuration_markdown()
    assert all_env_vars() == expected
    for env_var in expected:
        assert f"| `{env_var}` |" in page


def test_nested_settings_use_the_double_underscore_delimiter() -> None:
    page = render_configuration_markdown()
    assert "| `REPIC_DATABASE__URL` |" in page
    assert "| `REPIC_CAPTION__MAX_PIXELS` | integer | `802816` |" in page
    assert "## `caption`" in page


def test_rendering_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = render_configuration_markdown()
    monkeypatch.setenv("REPIC_CAPTION__MODEL", "/somewhere/else")
    monkeypatch.setenv("REPIC_RETRIEVAL__K", "7")
    assert render_configuration_markdown() == before


def test_cli_prints_the_page() -> None:
    from app.cli import app

    result = CliRunner().invoke(app, ["config", "docs"])
    assert result.exit_code == 0, result.output
    assert result.output == render_configuration_markdown()


def test_type_names_read_like_prose() -> None:
    assert type_name(Literal["a", "b"]) == "one of: `a`, `b`"
    assert type_name(int | None) == "integer or empty"
    assert type_name(list[str]) == "list of strings (JSON list)"
    assert type_name(bool) == "boolean"
