"""Progress reporting and cooperative stopping for GRPO runs.

This module owns the small interface between a training run and whoever watches it: the
:class:`Progress` record, the :class:`ProgressCallback` protocol (the Celery worker implements
it to write job rows; the CLI uses :class:`ConsoleProgress`), the cooperative :class:`StopFlag`
(an in-process event; the worker's subclass also follows the job row's cancel request), and
:class:`TrainerProgressAdapter`, the ``transformers.TrainerCallback`` that turns the trainer's
logs into ``Progress`` records, appends them to ``history.jsonl`` and stops the run when the
flag is set.

It imports nothing from the web layer; ``transformers`` is imported lazily so the worker can
import the protocol without the ML stack.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from trainer.rewards import TASKS, metric_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Where a run stands after an optimizer step.

    ``reward_means`` maps each task seen in the last logging window to its mean reward;
    ``reward`` is the mean over all tasks; ``loss``/``kl`` are None until the trainer logged
    them; ``eta_s`` is None before the first step.
    """

    step: int
    total_steps: int
    reward_means: dict[str, float]
    reward: float | None
    loss: float | None
    kl: float | None
    elapsed_s: float
    eta_s: float | None


@runtime_checkable
class ProgressCallback(Protocol):
    """Receives one :class:`Progress` per optimizer step (the worker writes job rows)."""

    def on_progress(self, p: Progress) -> None: ...


class StopFlag:
    """A cooperative stop request, checked by the run after every optimizer step.

    Like ``threading.Event``: :meth:`set` asks the run to stop; the run then saves what it
    has (adapter, history, ``version.json`` with ``stopped_early: true``).
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class _RunState:
    started: float = field(default_factory=time.monotonic)
    last_logs: dict[str, Any] = field(default_factory=dict)
    last_step_reported: int = -1
    stopped_by_flag: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _make_adapter_class() -> type:
    """Build the TrainerCallback subclass lazily (transformers is heavy to import)."""
    from transformers import TrainerCallback

    class _Adapter(TrainerCallback):
        def __init__(self, owner: TrainerProgressAdapter) -> None:
            self.owner = owner

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.owner.state.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            # DefaultFlowCallback ran first and decided whether this step logs; if it does not,
            # report now with the last known metrics so watchers still see every step.
            if not control.should_log:
                self.owner.report(state.global_step, state.max_steps, {})
            self._check_stop(state, control)
            return control

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if logs and any(k in logs for k in ("loss", "reward", "kl")):
                self.owner.report(state.global_step, state.max_steps, logs)
            # Checked again after the report: a watcher may have asked to stop in on_progress
            # (the trainer tests should_training_stop after logging, before the next step).
            self._check_stop(state, control)
            return control

        def _check_stop(self, state: Any, control: Any) -> None:
            owner = self.owner
            if owner.stop_flag is not None and owner.stop_flag.is_set():
                if not owner.state.stopped_by_flag:
                    logger.info("stop requested: stopping after step %d", state.global_step)
                owner.state.stopped_by_flag = True
                control.should_training_stop = True

    return _Adapter


class TrainerProgressAdapter:
    """Turns ``transformers`` trainer events into :class:`Progress` and history rows.

    ``trainer_callback`` is the ``TrainerCallback`` to hand to the trainer. Each report goes to
    every progress callback and, when ``history_path`` is given, becomes one line of
    ``history.jsonl`` (step, loss, kl, reward, per-task reward means, lr, elapsed), flushed at
    once so a killed run still leaves its curve.
    """

    def __init__(
        self,
        callbacks: Sequence[ProgressCallback] = (),
        stop_flag: StopFlag | None = None,
        history_path: str | Path | None = None,
    ) -> None:
        self.callbacks = list(callbacks)
        self.stop_flag = stop_flag
        self.state = _RunState()
        self.history_path = Path(history_path) if history_path is not None else None
        self.trainer_callback = _make_adapter_class()(self)

    @property
    def stopped_by_flag(self) -> bool:
        return self.state.stopped_by_flag

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    def close(self) -> None:
        """Nothing is held open (each history row is appended and closed at once)."""

    def report(self, step: int, total_steps: int, logs: dict[str, Any]) -> None:
        if logs:
            self.state.last_logs = dict(logs)
        if step == self.state.last_step_reported and not logs:
            return
        logs = self.state.last_logs
        elapsed = time.monotonic() - self.state.started
        eta = elapsed / step * max(0, total_steps - step) if step > 0 else None
        reward_means = {
            t: float(logs[metric_name(t)])
            for t in TASKS
            if _float(logs.get(metric_name(t))) is not None
        }
        progress = Progress(
            step=step,
            total_steps=total_steps,
            reward_means=reward_means,
            reward=_float(logs.get("reward")),
            loss=_float(logs.get("loss")),
            kl=_float(logs.get("kl")),
            elapsed_s=elapsed,
            eta_s=eta,
        )
        if step != self.state.last_step_reported:
            row = {
                **asdict(progress),
                "reward_std": _float(logs.get("reward_std")),
                "lr": _float(logs.get("learning_rate")),
                "completion_length": _float(logs.get("completions/mean_length")),
            }
            self.state.history.append(row)
            if self.history_path is not None:
                with self.history_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
        else:
            # The step was reported before its logs arrived: replace the row's metrics.
            self.state.history[-1].update(asdict(progress))
        self.state.last_step_reported = step
        for callback in self.callbacks:
            try:
                callback.on_progress(progress)
            except Exception:  # a watcher's bug must not kill a training run
                logger.exception("progress callback %r failed", callback)


class ConsoleProgress:
    """A tqdm progress bar for the CLI: step/total, reward, per-task rewards, ETA."""

    def __init__(self, desc: str = "GRPO") -> None:
        self.desc = desc
        self._bar: Any = None

    def on_progress(self, p: Progress) -> None:
        from tqdm.auto import tqdm

        if self._bar is None:
            self._bar = tqdm(total=p.total_steps, desc=self.desc, unit="step")
        self._bar.n = p.step
        postfix: dict[str, str] = {}
        if p.reward is not None:
            postfix["reward"] = f"{p.reward:.3f}"
        postfix.update({t: f"{v:.2f}" for t, v in p.reward_means.items()})
        if p.loss is not None:
            postfix["loss"] = f"{p.loss:.4f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()
        if p.step >= p.total_steps:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
