"""A real Celery worker subprocess for tests, configured like the app under test.

``start_worker(settings)`` runs ``celery -A tests.support.celery_worker worker`` with the test's
settings as REPIC_ environment variables (same database, same broker, same data directory).
With ``varied_reward=True`` the worker's trainer uses the real RePIC reward plus a spread that
depends on the text (as ``tests/trainer/test_grpo.py`` does): a random tiny model almost never
earns a real reward, so without it every GRPO group has zero advantage and the LoRA weights
never move.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from app.settings import Settings
from tests.utils.server import settings_env
from worker.embedded import EmbeddedWorker

VARIED_REWARD_ENV = "REPIC_TEST_VARIED_REWARD"


def _patch_reward() -> None:
    from trainer import grpo
    from trainer.rewards import completion_text, repic_reward

    def varied(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float]:
        real = repic_reward(prompts, completions, **kwargs)
        return [float(r or 0.0) + (sum(map(ord, completion_text(c))) % 7) / 7
                for r, c in zip(real, completions, strict=True)]

    varied.__name__ = "repic"
    grpo.repic_reward = varied  # type: ignore[assignment]


def __getattr__(name: str) -> Any:
    # ``celery -A tests.support.celery_worker``: the real worker app, optionally patched.
    if name in ("app", "celery"):
        from worker import celery_app

        if os.environ.get(VARIED_REWARD_ENV) == "1":
            _patch_reward()
        return celery_app.app
    raise AttributeError(name)


def start_worker(settings: Settings, queues: tuple[str, ...] = ("cpu", "gpu"),
                 varied_reward: bool = False, name: str | None = None,
                 pool: str = "solo") -> EmbeddedWorker:
    env = {**os.environ, **settings_env(settings), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    if varied_reward:
        env[VARIED_REWARD_ENV] = "1"
    worker = EmbeddedWorker(settings, queues=queues, pool=pool, env=env,
                            app_module="tests.support.celery_worker",
                            log_path=settings.data_dir / f"worker-{time.monotonic_ns()}.log",
                            name=name or f"test-{time.monotonic_ns()}@%h")
    return worker.start()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             worker: EmbeddedWorker | None = None, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until truthy; on timeout fail with the worker's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker is not None and not worker.alive():
            break
        time.sleep(interval)
    tail = worker.log_path.read_text()[-4000:] if worker and worker.log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- worker log ---\n{tail}")
