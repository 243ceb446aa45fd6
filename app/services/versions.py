"""Model versions: base model + optional LoRA adapter; activation, rollback, the base row.

Exactly one version is active (the partial unique index ``uq_model_versions_one_active``
enforces it in the database). Activation loads the adapter into the caption backend *first*
(every vLLM replica, or the in-process PEFT model) and flips the rows only when that worked, so
a failed load leaves the previous version active and the caller sees why. New caption requests
read the active row, so activation is immediate. Rollback is activating the version that was
active before.

The promotion gate (evaluation) is handed to the constructor as ``gate``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.enums import VersionState
from app.errors import Conflict, NotFound, UpstreamFailed
from app.ml.backends.base import CaptionBackendError
from app.models import ModelVersion, User, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")


class ActivationGate(Protocol):
    """The promotion gate: ``gate(session, candidate, current)`` raises a DomainError to
    refuse an activation; ``forced`` records an activation an admin forced past it."""

    def __call__(
        self, session: Session, candidate: ModelVersion, current: ModelVersion | None, /
    ) -> None: ...

    def forced(
        self,
        session: Session,
        candidate: ModelVersion,
        current: ModelVersion | None,
        actor: User | None = None,
        /,
    ) -> object: ...


def active_version(session: Session) -> ModelVersion | None:
    """The one active model version (the database allows at most one)."""
    return session.scalar(select(ModelVersion).where(ModelVersion.state == VersionState.ACTIVE))


class VersionNotFound(NotFound):
    def __init__(self, detail: str = "Model version not found") -> None:
        super().__init__(detail)


class ActivationFailed(UpstreamFailed):
    """The adapter could not be loaded; the previous version stays active."""


def adapter_name(version: ModelVersion) -> str | None:
    """The name a version's adapter is served under (vLLM ``model`` field, PEFT adapter)."""
    return f"v{version.id}" if version.adapter_path else None


def run_coroutine_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even under a running event loop (a thread
    with its own loop; backends open per-loop clients, so this is safe)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="sync-coroutine")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


class VersionService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        base_model: str,
        backend_getter: Callable[[], Any] | None = None,
        gate: ActivationGate | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.base_model = base_model
        self.backend_getter = backend_getter or (lambda: None)
        #: Promotion gate (evaluation): called before loading unless ``force``.
        self.gate = gate

    # -- reads ----------------------------------------------------------------------------

    def ensure_base(self, session: Session) -> ModelVersion | None:
        """With no version rows at all, create the base model's row, active. Returns the
        active version (None only if rows exist but none is active)."""
        active = self.active(session)
        if active is not None:
            return active
        if session.scalar(select(func.count()).select_from(ModelVersion)):
            return None
        base = ModelVersion(
            name="base",
            base_model=self.base_model,
            adapter_path=None,
            state=VersionState.ACTIVE,
            activated_at=utcnow(),
            config={},
            data_summary={},
            evaluation={},
        )
        session.add(base)
        try:
            session.commit()
        except IntegrityError:  # another process made it first
            session.rollback()
            return self.active(session)
        log.info("created the base model version %s (%s)", base.id, self.base_model)
        return base

    def active(self, session: Session) -> ModelVersion | None:
        return active_version(session)

    def list(
        self,
        session: Session,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[ModelVersion], int]:
        self.ensure_base(session)
        count = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
        rows = session.scalars(
            select(ModelVersion).order_by(ModelVersion.id.desc()).offset(skip).limit(limit)
        )
        return list(rows), count

    def get(self, session: Session, version_id: int) -> ModelVersion:
        version = session.get(ModelVersion, version_id)
        if version is None:
            raise VersionNotFound()
        return version

    def previous(self, session: Session) -> ModelVersion | None:
        """The version that was active before the current one (rollback target)."""
        return session.scalar(
            select(ModelVersion)
            .where(
                ModelVersion.state != VersionState.ACTIVE, ModelVersion.activated_at.is_not(None)
            )
            .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())
            .limit(1)
        )

    # -- writes ---------------------------------------------------------------------------

    def register_candidate(
        self,
        session: Session,
        *,
        name: str,
        adapter_path: str | None,
        base_model: str,
        training_job_id: int | None,
        config: dict[str, Any],
        data_summary: dict[str, Any],
    ) -> ModelVersion:
        self.ensure_base(session)
        version = ModelVersion(
            name=name,
            base_model=base_model,
            adapter_path=adapter_path,
            training_job_id=training_job_id,
            config=config,
            data_summary=data_summary,
            evaluation={},
            state=VersionState.CANDIDATE,
        )
        session.add(version)
        session.commit()
        log.info("registered candidate version %s (%s)", version.id, name)
        return version

    async def activate(
        self, session: Session, version_id: int, actor: User | None, force: bool = False
    ) -> ModelVersion:
        """Make ``version_id`` the active version: gate, load the adapter, flip the rows.

        The database work runs in a thread; only the adapter load is awaited here."""
        current, version = await asyncio.to_thread(self._gate, session, version_id, actor, force)
        if version.state == VersionState.ACTIVE:
            return version
        if version.adapter_path is None and version.base_model != self.base_model:
            # A conflict with how the server is configured (409), not a replica's failure.
            raise Conflict(
                f"{version.name} is the full model {version.base_model!r}, and the caption "
                f"backend serves {self.base_model!r}: serve it (REPIC_CAPTION__MODEL, or vLLM's "
                "--model via REPIC_BASE_MODEL) and restart, then activate it"
            )
        name = adapter_name(version)
        if name is not None:
            backend = self.backend_getter()
            if backend is None:
                raise ActivationFailed(
                    f"Cannot activate {version.name}: no caption backend runs in this process"
                )
            try:
                await backend.load_adapter(name, str(version.adapter_path))
            except CaptionBackendError as exc:
                still = f"; {current.name} stays active" if current is not None else ""
                log.warning("activation of version %s failed: %s", version.id, exc.reason)
                raise ActivationFailed(
                    f"Could not load the adapter of {version.name}: {exc.reason}{still}"
                ) from exc
        return await asyncio.to_thread(self._flip, session, current, version, actor)

    def _gate(
        self, session: Session, version_id: int, actor: User | None, force: bool
    ) -> tuple[ModelVersion | None, ModelVersion]:
        current = self.ensure_base(session)
        version = self.get(session, version_id)
        if version.state == VersionState.ACTIVE:
            return current, version
        if self.gate is not None and not force:
            self.gate(session, version, current)
        elif self.gate is not None:
            self.gate.forced(session, version, current, actor)
        return current, version

    def _flip(
        self,
        session: Session,
        current: ModelVersion | None,
        version: ModelVersion,
        actor: User | None,
    ) -> ModelVersion:
        if current is not None:
            current.state = VersionState.RETIRED
            # The old row must leave 'active' before the new one enters it (unique index).
            session.flush()
        version.state = VersionState.ACTIVE
        version.activated_at = utcnow()
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise Conflict("Another activation happened at the same time; try again") from exc
        log.info(
            "version %s (%s) activated by %s",
            version.id,
            version.name,
            actor.username if actor else "system",
        )
        return version

    async def rollback(
        self, session: Session, actor: User | None, force: bool = True
    ) -> ModelVersion:
        """Activate the version that was active before the current one."""

        def previous() -> ModelVersion:
            self.ensure_base(session)
            target = self.previous(session)
            if target is None:
                raise Conflict("No earlier version to roll back to")
            return target

        target = await asyncio.to_thread(previous)
        # Rolling back to a version that served before skips the promotion gate by default.
        return await self.activate(session, target.id, actor, force=force)

    async def ensure_active_adapter_loaded(self) -> str | None:
        """Load the active version's adapter into this process's backend (app start, and a
        vLLM replica that came up later). Returns why it failed, or None."""
        backend = self.backend_getter()
        if backend is None:
            return None
        with self.session_factory() as session:
            version = self.active(session)
            if version is None or adapter_name(version) is None:
                return None
            name, path = adapter_name(version), str(version.adapter_path)
        try:
            await backend.load_adapter(name, path)
        except CaptionBackendError as exc:
            log.error("active version %s: adapter not loaded: %s", name, exc.reason)
            return f"The active model version's adapter {name} could not be loaded: {exc.reason}"
        log.info("active adapter %s loaded from %s", name, path)
        return None
