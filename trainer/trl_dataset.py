"""The ``datasets.Dataset`` that TRL's ``GRPOTrainer`` consumes, with names and suffixes drawn on
the fly.

This module owns :func:`to_trl_dataset` (records -> dataset), the table it stores
(:func:`record_table`), its per-row transform (:class:`RecordTransform`: what the model is
given for a record, also what ``repic data preview`` prints) and the callback that tells the
transform which epoch runs (:func:`epoch_names_callback`).

Names on the fly, and why this design works with TRL
----------------------------------------------------
Records built from concepts hold *name slots* instead of names: the problem is written by the
prompt module with the placeholder ``{name0}`` as the name (so it reads ``... named <{name0}>``)
and the solution is ``"<{name0}>"``. The Arrow table stores these templates, the image *paths*
and the solution as a JSON string (Arrow columns need one type; solutions are strings, lists
of names or boxes). A ``Dataset.set_transform`` callable (:class:`RecordTransform`) runs on every
row access: it draws fake names, fills the slots, decodes the solution back to its real Python
type, loads the images (resized to the serving pixel bounds) and builds the conversational
``prompt`` with :func:`app.ml.prompt.build_training_prompt`.

Suffixes as the original loader draws them
------------------------------------------
A stored problem has no suffix. Each read appends the task's suffix
(:func:`app.ml.instructions.record_suffix`: the yes/no and box suffixes always, one of the
two ICT suffixes or none, 20/20/60), drawn from ``(seed, epoch, record)``: a new draw every
epoch, as the original's per-read ``random.randint`` gives, and the same for the G reads of
one group, whose completions must answer the same prompt. Images are resized as the original
trainer resizes them (:mod:`trainer.model_view`) and a VLT box is mapped from the stored
file's pixels into that view.

The names are a pure function of ``(seed, epoch, row uid)``. That matters because TRL's
``RepeatSampler`` fetches the same row once per generation (G times, possibly in different
processes): all G completions of a group must see the same names, or the group advantage would
compare different prompts. :func:`epoch_names_callback` bumps :attr:`RecordTransform.epoch` at
each epoch start (``GRPOTrainer`` builds its dataloader with ``num_workers=0`` in our runs, so
the attribute is seen by the loader), so every epoch draws new names for every record: the model
cannot memorise a name and has to copy the one it is given. Rewards receive the decoded
``solution`` and ``task`` columns as keyword arguments, so :mod:`trainer.rewards` stays pure.
"""

from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.ml.instructions import record_suffix
from app.ml.prompt import build_training_prompt
from trainer.fake_names import FakeNameSampler
from trainer.model_family import QWEN2_5_VL, ModelFamily
from trainer.model_view import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS, load_model_view, scale_box
from trainer.records import DatasetError, TrainingRecord, fill_names
from trainer.rewards import canonical_task

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


class RecordTransform:
    """``Dataset.set_transform`` callable: fills names, draws suffixes, decodes solutions, loads
    images.

    Output columns per row: ``prompt`` (conversational, from ``build_training_prompt``: one
    placeholder per image, then problem + suffix), ``images`` (PIL images in placeholder
    order, resized to the model view), ``solution`` (its real type; a VLT box mapped into the
    view of the record's last image), ``task`` and ``uid``. Set :attr:`epoch` to redraw every
    record's names and suffix.
    """

    def __init__(
        self,
        names: FakeNameSampler | None,
        min_pixels: int = PAPER_MIN_PIXELS,
        max_pixels: int = PAPER_MAX_PIXELS,
        cache_size: int = 256,
        *,
        pre_resize: bool = True,
        seed: int = 0,
        family: ModelFamily = QWEN2_5_VL,
    ) -> None:
        self.names = names
        #: The base model's family: the multiple image sides are rounded to, the box frame.
        self.family = family
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.pre_resize = pre_resize
        self.seed = seed
        self.epoch = 0
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, bool], tuple[Any, tuple[int, int]]] = OrderedDict()

    def _image(self, path: str, images: int) -> tuple[Any, tuple[int, int]]:
        """(the model's view of ``path`` in a record of ``images`` images, the file's size)."""
        # The G copies of a row are fetched together: cache so each file is decoded once. The
        # view depends on the record's image count only through the several-images rule.
        key = (path, images > 1)
        cached = self._cache.get(key)
        if cached is None:
            from PIL import Image

            with Image.open(path) as img:
                size = img.size
            view = load_model_view(
                path, images, self.min_pixels, self.max_pixels, pre_resize=self.pre_resize,
                factor=self.family.pixel_factor,
            )
            cached = (view, size)
            self._cache[key] = cached
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached

    def suffix(self, task: str, draw_key: str) -> str:
        """The suffix a row gets at the current epoch (the same for every read of the epoch)."""
        return record_suffix(task, random.Random(f"{self.seed}:{self.epoch}:{draw_key}"))

    def row_names(self, uid: int, slots: int, real_names: Sequence[str]) -> list[str]:
        """Names that fill a row's slots at the current epoch."""
        if slots == 0:
            return []
        if self.names is None:
            return list(real_names)
        return self.names.draw(f"{self.epoch}:{uid}", slots, exclude=real_names)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            "prompt": [],
            "images": [],
            "solution": [],
            "task": [],
            "uid": [],
        }
        for uid, paths, problem, solution, task, slots, real, key in zip(
            batch["uid"],
            batch["image_paths"],
            batch["problem"],
            batch["solution_json"],
            batch["task"],
            batch["name_slots"],
            batch["real_names"],
            batch["draw_key"],
            strict=True,
        ):
            names = self.row_names(uid, slots, real)
            loaded = [self._image(p, len(paths)) for p in paths]
            text = fill_names(problem, names) + self.suffix(task, key)
            prompt = build_training_prompt([view for view, _ in loaded], text)
            value = fill_names(json.loads(solution), names)
            if task == "vlt" and isinstance(value, list) and len(value) == 4:
                # A stored box is in the file's pixels; the model answers in its view's
                # (Qwen3-VL: on a 0..1000 grid of it).
                view, size = loaded[-1]
                value = self.family.box_in_frame(scale_box(value, size, view.size), view.size)
            out["prompt"].append(prompt.messages)
            out["images"].append(prompt.images)
            out["solution"].append(value)
            out["task"].append(task)
            out["uid"].append(uid)
        return out


def _draw_key(uid: int, record: TrainingRecord) -> str:
    """What a record's suffix draws are keyed on: a file record's file and index (so a preview
    of the file shows the draws a run makes), else its position."""
    if "index" in record.meta and "line" in record.meta:  # read by trainer.records
        return f"{record.source}#{record.meta['index']}"
    return str(uid)


def record_table(
    records: Sequence[TrainingRecord], names: FakeNameSampler | None = None
) -> dict[str, list[Any]]:
    """The columns the dataset stores: templates, image paths, JSON solutions, draw keys."""
    if not records:
        raise DatasetError(["no training records"])
    real_names = [[str(n) for n in r.meta.get("real_names", [])] for r in records]
    for uid, record in enumerate(records):
        if len(real_names[uid]) < record.name_slots and names is None:
            raise DatasetError(
                [
                    f"record {uid}: field 'meta.real_names': {record.name_slots} "
                    "name slots but too few real names (and fake names are off)"
                ]
            )
    return {
        "uid": list(range(len(records))),
        "image_paths": [[str(p) for p in r.images] for r in records],
        "problem": [r.problem for r in records],
        "solution_json": [json.dumps(r.solution) for r in records],
        "task": [canonical_task(r.task) for r in records],
        "name_slots": [r.name_slots for r in records],
        "real_names": real_names,
        "source": [r.source for r in records],
        "draw_key": [_draw_key(uid, r) for uid, r in enumerate(records)],
    }


def to_trl_dataset(
    records: Sequence[TrainingRecord],
    names: FakeNameSampler | None = None,
    *,
    min_pixels: int = PAPER_MIN_PIXELS,
    max_pixels: int = PAPER_MAX_PIXELS,
    pre_resize: bool = True,
    seed: int = 0,
    family: ModelFamily = QWEN2_5_VL,
) -> tuple[datasets.Dataset, RecordTransform]:
    """Records -> a ``datasets.Dataset`` for ``GRPOTrainer`` and its :class:`RecordTransform`.

    The Arrow table holds templates, image paths and JSON solutions; the transform produces
    ``prompt``/``images``/``solution``/``task`` per access (module docstring). ``names=None``
    fills slots with the concepts' real names (only when so configured); ``seed`` keys the
    suffix draws; ``family`` is the base model's (:mod:`trainer.model_family`).
    """
    import datasets

    dataset = datasets.Dataset.from_dict(record_table(records, names))
    transform = RecordTransform(
        names, min_pixels=min_pixels, max_pixels=max_pixels, pre_resize=pre_resize, seed=seed,
        family=family,
    )
    dataset.set_transform(transform)
    return dataset, transform


def epoch_names_callback(transform: RecordTransform) -> Any:
    """A ``TrainerCallback`` telling ``transform`` which epoch runs, so each epoch draws new
    fake names for every record (see the module docstring)."""
    from transformers import TrainerCallback

    class EpochNamesCallback(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            transform.epoch = int(round(state.epoch or 0))
            logger.debug("fake names for epoch %d", transform.epoch)

    return EpochNamesCallback()
