"""The TRL dataset: fake names drawn per epoch, real names when off, the rows' shape."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from app.ml.instructions import ICT_SUFFIXES, IOU_SUFFIX, YES_NO_SUFFIX
from tests.trainer.factories import COLOURS, solid
from trainer.fake_names import FakeNameSampler
from trainer.model_view import model_view_size, scale_box
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


# --------------------------------------------------------------------------- suffixes + views


def _file_record(tmp_path: Path, task: str, images: int, solution: object) -> TrainingRecord:
    paths = [solid(tmp_path / f"{task}_{i}.png", COLOURS[i % len(COLOURS)]) for i in range(images)]
    return TrainingRecord(list(paths), f"Problem of {task}.", solution, task)  # type: ignore[arg-type]


def _user_text(row: dict) -> str:
    (message,) = row["prompt"]
    return message["content"][-1]["text"]


def test_ict_suffix_is_drawn_when_read_and_redrawn_each_epoch(tmp_path: Path) -> None:
    record = _file_record(tmp_path, "ict", 2, "<Bo>")
    dataset, transform = to_trl_dataset([record], None)
    texts = []
    for epoch in range(400):
        transform.epoch = epoch
        text = _user_text(dataset[0])
        assert _user_text(dataset[0]) == text  # the G reads of one epoch share the suffix
        texts.append(text)
    assert record.problem == "Problem of ict."  # nothing is baked into the record
    counts = Counter(texts)
    assert set(counts) == {record.problem + s for s in ("", *ICT_SUFFIXES)}
    assert 0.5 < counts[record.problem] / len(texts) < 0.7


def test_suffix_draws_follow_the_seed(tmp_path: Path) -> None:
    records = [_file_record(tmp_path, "ict", 2, "<Bo>") for _ in range(30)]
    draws = []
    for seed in (0, 0, 1):
        dataset, _ = to_trl_dataset(records, None, seed=seed)
        draws.append([_user_text(dataset[i]) for i in range(len(records))])
    assert draws[0] == draws[1] != draws[2]


@pytest.mark.parametrize(
    ("task", "solution", "suffix"),
    [("oct", "yes", YES_NO_SUFFIX), ("vlt", [1, 1, 20, 20], IOU_SUFFIX)],
)
def test_oct_and_vlt_always_get_their_suffix(
    tmp_path: Path, task: str, solution: object, suffix: str
) -> None:
    dataset, transform = to_trl_dataset([_file_record(tmp_path, task, 1, solution)], None)
    for epoch in range(5):
        transform.epoch = epoch
        assert _user_text(dataset[0]) == f"Problem of {task}.{suffix}"


def test_multi_image_vlt_gets_every_image_not_the_originals_single_placeholder(
    tmp_path: Path,
) -> None:
    dataset, _ = to_trl_dataset([_file_record(tmp_path, "vlt", 3, [1, 1, 20, 20])], None)
    row = dataset[0]
    placeholders = [c for c in row["prompt"][0]["content"] if c["type"] == "image"]
    assert len(placeholders) == len(row["images"]) == 3
    assert _user_text(row).endswith(IOU_SUFFIX)


def test_single_image_multi_ict_is_asked_for_a_caption_not_a_box(tmp_path: Path) -> None:
    dataset, transform = to_trl_dataset([_file_record(tmp_path, "ict_multi", 1, ["<A>"])], None)
    for epoch in range(20):
        transform.epoch = epoch
        assert IOU_SUFFIX not in _user_text(dataset[0])


def test_vlt_box_is_mapped_into_the_frame_the_model_sees(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (0, 0, 0)).save(path)
    record = TrainingRecord([path], "Where?", [200, 100, 600, 500], "vlt")
    dataset, _ = to_trl_dataset([record], None)
    row = dataset[0]
    view = model_view_size(2000, 1000, 1)
    assert view == (2044, 1036)  # pre-resized to a shorter side of 1024, then to 28s
    assert row["images"][0].size == view
    assert row["solution"] == scale_box([200, 100, 600, 500], (2000, 1000), view)
    assert row["solution"] == [204, 104, 613, 518]


def test_reference_and_query_images_follow_the_several_images_rule(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"p{i}.png")
        Image.new("RGB", (1000, 800), COLOURS[i]).save(paths[-1])
    dataset, _ = to_trl_dataset([TrainingRecord(paths, "Caption?", "<Bo>", "ict")], None)
    sizes = [im.size for im in dataset[0]["images"]]
    assert sizes == [model_view_size(1000, 800, 2)] * 2
    assert sizes[0][1] == 504  # shorter side 512, rounded to a multiple of 28


def test_qwen3_vl_sees_sides_in_32s_and_boxes_on_its_relative_grid(tmp_path: Path) -> None:
    from trainer.model_family import QWEN3_VL

    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (0, 0, 0)).save(path)
    record = TrainingRecord([path], "Where?", [200, 100, 600, 500], "vlt")
    dataset, _ = to_trl_dataset([record], None, family=QWEN3_VL)
    row = dataset[0]
    view = model_view_size(2000, 1000, 1, factor=32)
    assert view == (2048, 1024) and row["images"][0].size == view
    # Qwen3-VL answers on a 0..1000 grid of the image, whatever its size.
    assert row["solution"] == [100, 100, 300, 500]
