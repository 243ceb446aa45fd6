"""Readiness: can this process serve? The database, the image store and the job broker must
answer (without the broker no job can be queued: uploads with background embedding, batches,
training, evaluations); the caption backend's health is reported beside them (it may recover,
and requests that need it answer 503 meanwhile)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine, text

from app.model_services import ModelServices
from app.storage import ImageStore


class BrokerProbe(Protocol):
    def ping(self) -> str | None: ...


@dataclass
class ReadyReport:
    ok: bool
    checks: dict[str, str]
    warnings: list[str]
    models: dict[str, Any]
    dependencies: dict[str, Any] = field(default_factory=dict)

    def statuses_only(self) -> ReadyReport:
        """What anyone may see: each check as ``ok`` or ``error``, without the error texts,
        warnings and model paths (they tell a stranger the file layout and the stack)."""

        def status(value: Any) -> str:
            return "ok" if value == "ok" else "error"

        return ReadyReport(
            ok=self.ok,
            checks={name: status(value) for name, value in self.checks.items()},
            warnings=[],
            models={},
            dependencies={name: status(value) for name, value in self.dependencies.items()},
        )


class ReadinessService:
    def __init__(
        self,
        engine: Engine,
        store: ImageStore,
        models: ModelServices,
        broker: BrokerProbe,
        warnings: list[str],
        broker_timeout_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.store = store
        self.models = models
        self.broker = broker
        self.warnings = warnings
        self.broker_timeout_s = broker_timeout_s

    def _database(self) -> str:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means not ready
            return f"error: {exc.__class__.__name__}"
        return "ok"

    def _storage(self) -> str:
        root = self.store.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / ".ready-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            return f"error: {exc.strerror}"
        return "ok"

    async def _broker(self) -> str | None:
        # A hung broker answers nothing until the client's socket timeout (10 s): readiness
        # must not wait that long (probes have their own, shorter timeouts).
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self.broker.ping), self.broker_timeout_s
            )
        except TimeoutError:
            return f"error: no answer within {self.broker_timeout_s:g} s"

    async def check(self) -> ReadyReport:
        database, storage, broker = await asyncio.gather(
            asyncio.to_thread(self._database),
            asyncio.to_thread(self._storage),
            self._broker(),
        )
        checks = {"database": database, "storage": storage, "broker": broker or "ok"}
        dependencies: dict[str, Any] = {"broker": broker or "ok"}
        backend = self.models.loaded_backend()
        if backend is not None:
            health = await backend.health()
            dependencies["caption_backend"] = "ok" if health.ok else f"error: {health.reason}"
        return ReadyReport(
            ok=all(v == "ok" for v in checks.values()),
            checks=checks,
            warnings=list(self.warnings),
            models=self.models.status,
            dependencies=dependencies,
        )
