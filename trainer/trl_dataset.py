"""The ``datasets.Dataset`` that TRL's ``GRPOTrainer`` consumes, with names drawn on the fly.

This module owns :func:`to_trl_dataset` (records -> dataset), its per-row transform
(:class:`RecordTransform`) and the callback that tells the transform which epoch runs
(:func:`epoch_names_callback`).

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
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.ml.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from app.ml.prompt import build_training_prompt
from trainer.fake_names import FakeNameSampler
from trainer.model_view import load_model_view
from trainer.records import DatasetError, TrainingRecord, fill_names
from trainer.rewards import canonical_task

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


class RecordTransform:
    """``Dataset.set_transform`` callable: fills names, decodes solutions, loads images.

    Output columns per row: ``prompt`` (conversational, from ``build_training_prompt``),
    ``images`` (PIL images in placeholder order, resized to the model view), ``solution`` (its
    real type), ``task`` and ``uid``. Set :attr:`epoch` to redraw every record's names.
    """

    def __init__(
        self,
        names: FakeNameSampler | None,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_size: int = 256,
    ) -> None:
        self.names = names
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.epoch = 0
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def _image(self, path: str) -> Any:
        # The G copies of a row are fetched together: cache so each file is decoded once.
        image = self._cache.get(path)
        if image is None:
            image = load_model_view(path, self.min_pixels, self.max_pixels)
            self._cache[path] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(path)
        return image

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
        for uid, paths, problem, solution, task, slots, real in zip(
            batch["uid"],
            batch["image_paths"],
            batch["problem"],
            batch["solution_json"],
            batch["task"],
            batch["name_slots"],
            batch["real_names"],
            strict=True,
        ):
            names = self.row_names(uid, slots, real)
            images = [self._image(p) for p in paths]
            prompt = build_training_prompt(images, fill_names(problem, names))
            out["prompt"].append(prompt.messages)
            out["images"].append(prompt.images)
            out["solution"].append(fill_names(json.loads(solution), names))
            out["task"].append(task)
            out["uid"].append(uid)
        return out


def to_trl_dataset(
    records: Sequence[TrainingRecord],
    names: FakeNameSampler | None = None,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[datasets.Dataset, RecordTransform]:
    """Records -> a ``datasets.Dataset`` for ``GRPOTrainer`` and its :class:`RecordTransform`.

    The Arrow table holds templates, image paths and JSON solutions; the transform produces
    ``prompt``/``images``/``solution``/``task`` per access (module docstring). ``names=None``
    fills slots with the concepts' real names (only when so configured).
    """
    import datasets

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
    table: dict[str, list[Any]] = {
        "uid": list(range(len(records))),
        "image_paths": [[str(p) for p in r.images] for r in records],
        "problem": [r.problem for r in records],
        "solution_json": [json.dumps(r.solution) for r in records],
        "task": [canonical_task(r.task) for r in records],
        "name_slots": [r.name_slots for r in records],
        "real_names": real_names,
        "source": [r.source for r in records],
    }
    dataset = datasets.Dataset.from_dict(table)
    transform = RecordTransform(names, min_pixels=min_pixels, max_pixels=max_pixels)
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
