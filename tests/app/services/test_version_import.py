"""Importing adapters and merged models as versions: checks before anything is registered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidInput
from app.services.version_import import import_adapter, import_merged_model, inspect_adapter
from tests.utils.adapters import LANGUAGE_ONLY, WITH_VISION, save_tiny_lora


@pytest.fixture(scope="module")
def adapters(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "language": save_tiny_lora(tiny_models / "vlm", root / "language", LANGUAGE_ONLY),
        "vision": save_tiny_lora(tiny_models / "vlm", root / "vision", WITH_VISION),
    }


def test_a_language_model_lora_has_nothing_to_warn_about(adapters: dict[str, Path]) -> None:
    report = inspect_adapter(adapters["language"])
    assert (report.vision_tower, report.lm_head, report.notes) == (False, False, [])
    assert report.rank == 4


def test_a_lora_on_the_vision_tower_says_vllm_ignores_it(adapters: dict[str, Path]) -> None:
    report = inspect_adapter(adapters["vision"])
    assert report.vision_tower is True
    assert any("vision tower" in n and "in-process" in n for n in report.notes)


def test_a_folder_without_an_adapter_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="adapter_config.json"):
        inspect_adapter(tmp_path)


def test_an_adapter_for_another_base_model_is_refused(container: Any,
                                                      adapters: dict[str, Path],
                                                      tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for f in adapters["language"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2-VL-2B-Instruct"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with container.session_factory() as session, pytest.raises(InvalidInput, match="serves"):
        import_adapter(container.versions, session, other, tmp_path / "adapters")
    assert not (tmp_path / "adapters").exists()


def test_an_imported_adapter_is_a_candidate_copied_into_the_adapters_folder(
    container: Any, adapters: dict[str, Path]
) -> None:
    with container.session_factory() as session:
        version, _ = import_adapter(container.versions, session, adapters["language"],
                                    container.settings.adapters_dir, name="repic-lora")
    assert version.state == "candidate"
    assert Path(version.adapter_path).parent == container.settings.adapters_dir
    assert (Path(version.adapter_path) / "adapter_config.json").is_file()


def test_a_merged_model_that_is_not_served_cannot_be_activated(container: Any) -> None:
    import asyncio

    from app.errors import Conflict

    with container.session_factory() as session:
        version = import_merged_model(container.versions, session, "Yeongtak/RePIC_Qwen2.5VL_7B")
        with pytest.raises(Conflict, match="REPIC_CAPTION__MODEL"):
            asyncio.run(container.versions.activate(session, version.id, None, force=True))


def test_an_adapter_path_too_long_for_the_file_system_is_invalid_input(
    container: Any, tmp_path: Path
) -> None:
    with container.session_factory() as session, pytest.raises(InvalidInput, match="PEFT"):
        import_adapter(container.versions, session, tmp_path / ("x" * 1000),
                       container.settings.adapters_dir)


def test_a_merged_model_named_beyond_its_column_is_invalid_input(container: Any) -> None:
    with container.session_factory() as session, pytest.raises(InvalidInput, match="255"):
        import_merged_model(container.versions, session, "org/" + "m" * 300)
