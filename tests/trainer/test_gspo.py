"""GSPO (sequence-level importance ratios, the authors' follow-up CoViP) through the same run as
GRPO: TRL's ``importance_sampling_level="sequence"``, parameters change, the adapter reloads."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.test_grpo import _args, _Snapshot, _varied_reward
from trainer import grpo
from trainer.concept_records import ConceptPhotos
from trainer.grpo import RunResult, build_grpo_config, main
from trainer.toy_concepts import generated_concepts

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.ml.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", initializer_range=0.2)


@pytest.fixture(scope="module")
def toy_concepts(tmp_path_factory: pytest.TempPathFactory) -> list[ConceptPhotos]:
    return generated_concepts(tmp_path_factory.mktemp("photos"), n_concepts=3, photos=3, size=48)


class _TrainerArgs:
    """TrainerCallback keeping the GRPOConfig the trainer ran with."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            seen: Any = None

            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self.seen = args

        return _Callback()


@pytest.fixture(scope="module")
def trained(
    tiny_base: Path, toy_concepts: list[ConceptPhotos], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Any, Any]:
    snapshot, config = _Snapshot(), _TrainerArgs()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo, "repic_reward", _varied_reward)
        result = main(
            _args(tiny_base, tmp_path_factory.mktemp("runs"), loss="gspo"),
            concepts=toy_concepts,
            trainer_callbacks=[snapshot, config],
        )
    return result, snapshot, config.seen


def test_gspo_maps_to_sequence_level_importance_sampling(tmp_path: Path) -> None:
    gspo = _args(tmp_path, tmp_path, loss="gspo")
    config = build_grpo_config(gspo, tmp_path, "cpu", False, False)
    assert config.importance_sampling_level == "sequence"
    grpo_config = build_grpo_config(dataclasses.replace(gspo, loss="grpo"), tmp_path, "cpu",
                                    False, False)
    assert grpo_config.importance_sampling_level == "token"


def test_the_run_trains_with_sequence_level_ratios(trained: tuple[RunResult, Any, Any]) -> None:
    result, _, config = trained
    assert config.importance_sampling_level == "sequence"
    assert result.steps == 2 and result.version["loss"] == "gspo"


def test_every_trainable_parameter_changed(trained: tuple[RunResult, Any, Any]) -> None:
    import torch

    _, snapshot, _ = trained
    assert snapshot.before and snapshot.before.keys() == snapshot.after.keys()
    assert [n for n, p in snapshot.before.items() if torch.equal(p, snapshot.after[n])] == []


def test_the_adapter_reloads_with_peft(trained: tuple[RunResult, Any, Any], tiny_base: Path
                                       ) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    result, snapshot, _ = trained
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_base),
                                      str(result.adapter_dir))
    loaded = dict(model.named_parameters())
    for name, value in snapshot.after.items():
        assert torch.allclose(loaded[name], value), name
