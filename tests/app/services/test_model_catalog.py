"""The model catalog: what the configuration names, profiles, and the disk check of a pull."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.services.model_catalog import (
    ModelEntry,
    NotEnoughSpace,
    PullPlan,
    check_space,
    configured_models,
    embedder_entry,
)
from app.settings import Settings

pytestmark = pytest.mark.nodb


def test_the_cpu_profile_is_the_default_and_names_a_small_stack() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.models.profile == "cpu"
    assert (settings.embedder.model_name, settings.detector.kind, settings.caption.model) == (
        "ViT-B-32-quickgelu", "none", "Qwen/Qwen2.5-VL-3B-Instruct")


def test_the_gpu_profile_is_the_papers_stack() -> None:
    settings = Settings(_env_file=None, models={"profile": "gpu"})  # type: ignore[call-arg]
    assert (settings.embedder.model_name, settings.detector.kind, settings.caption.model) == (
        "ViT-L-14-336-quickgelu", "owlv2", "Qwen/Qwen2.5-VL-7B-Instruct")


def test_an_explicit_model_wins_over_the_profile() -> None:
    settings = Settings(_env_file=None, models={"profile": "gpu"},  # type: ignore[call-arg]
                        caption={"model": "org/mine"})
    assert settings.caption.model == "org/mine"
    assert settings.embedder.model_name == "ViT-L-14-336-quickgelu"


def test_an_open_clip_tag_is_pulled_from_the_repository_open_clip_names() -> None:
    entry = embedder_entry("ViT-L-14-336-quickgelu", "openai")
    assert entry.repo_id == "timm/vit_large_patch14_clip_336.openai"


def test_a_local_folder_needs_no_download(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, caption={"model": str(tmp_path)})  # type: ignore[call-arg]
    caption = next(e for e in configured_models(settings) if e.role == "caption")
    assert (caption.repo_id, caption.local_path) == (None, tmp_path)


def test_a_download_bigger_than_the_free_space_is_refused(tmp_path: Path) -> None:
    plan = PullPlan(ModelEntry("caption", "org/huge", repo_id="org/huge"),
                    [("model.safetensors", 10**18)], "c" * 40)
    with pytest.raises(NotEnoughSpace, match="free"):
        check_space([plan], tmp_path / "not-yet" / "cache")
