"""The TRL dataset: fake names drawn per epoch, real names when off, the rows' shape."""

from __future__ import annotations

import types

import pytest
from PIL import Image

from tests.trainer.factories import COLOURS
from trainer.fake_names import FakeNameSampler
from trainer.records import TrainingRecord
from trainer.trl_dataset import RecordTransform, epoch_names_callback, to_trl_dataset

pytestmark = pytest.mark.nodb


# --------------------------------------------------------------------------- names + TRL rows


@pytest.fixture(scope="module")
def sampler() -> FakeNameSampler:
    return FakeNameSampler(seed=1)


def _text(prompt: list[dict]) -> str:
    return " ".join(c.get("text", "") for m in prompt for c in m["content"])


def test_fake_names_differ_across_epochs_and_hide_real_names(
    built: list[TrainingRecord], sampler: FakeNameSampler
) -> None:
    dataset, transform = to_trl_dataset(built[:40], sampler, max_pixels=112 * 112)
    named = [i for i in range(40) if built[i].name_slots]
    first = [_text(dataset[i]["prompt"]) for i in named]
    again = [_text(dataset[i]["prompt"]) for i in named]
    assert first == again  # the G copies of a row in one epoch see the same names
    transform.epoch = 1
    second = [_text(dataset[i]["prompt"]) for i in named]
    changed = sum(a != b for a, b in zip(first, second, strict=True))
    assert changed >= 0.8 * len(named)
    real = {f"Real{i}" for i in range(len(COLOURS))}
    for i in named:
        row = dataset[i]
        text = _text(row["prompt"])
        assert not any(name in text for name in real)
        assert "{name" not in text
        names = row["solution"] if isinstance(row["solution"], list) else [row["solution"]]
        for name in names:
            if isinstance(name, str) and name.startswith("<"):
                assert name in text


def test_real_names_when_fake_names_are_off(built: list[TrainingRecord]) -> None:
    record = next(r for r in built if r.task == "ict")
    dataset, _ = to_trl_dataset([record], None)
    row = dataset[0]
    assert row["solution"] == f"<{record.meta['real_names'][0]}>"
    assert row["solution"] in _text(row["prompt"])


def test_trl_row_shape(built: list[TrainingRecord], sampler: FakeNameSampler) -> None:
    dataset, _ = to_trl_dataset(built[:30], sampler, max_pixels=112 * 112)
    for index in range(30):
        row = dataset[index]
        (message,) = row["prompt"]
        assert message["role"] == "user"
        placeholders = [c for c in message["content"] if c["type"] == "image"]
        assert len(placeholders) == len(row["images"]) == len(built[index].images)
        assert all(
            isinstance(im, Image.Image) and im.width * im.height <= 112 * 112
            for im in row["images"]
        )
        assert row["task"] == built[index].task
        if row["task"] == "vlt":
            assert isinstance(row["solution"], list) and len(row["solution"]) == 4
            assert all(isinstance(v, int) for v in row["solution"])


def test_fake_names_are_usable_first_names(sampler: FakeNameSampler) -> None:
    names = sampler.draw("k", 3, exclude=["Real0"])
    assert len(set(names)) == 3
    assert all(" " not in n and "<" not in n and n != "Real0" for n in names)
    assert sampler.draw("k", 3, exclude=["Real0"]) == names
    assert len(sampler.pools) == 5


def test_epoch_callback_redraws_names() -> None:
    transform = RecordTransform(None)
    callback = epoch_names_callback(transform)
    callback.on_epoch_begin(None, types.SimpleNamespace(epoch=1.0), None)
    assert transform.epoch == 1
