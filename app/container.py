"""Long-lived resources of one app process, built in the lifespan and reached through deps.

Nothing here is created on import: tests and the CLI build their own container from settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory
from app.security import configure_password_hashing
from app.services.concepts import ConceptService, UploadLimits
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: ImageStore
    concepts: ConceptService
    warnings: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for closer in reversed(self.extras.get("closers", [])):
            try:
                closer()
            except Exception:
                log.exception("closing %s failed", closer)
        self.engine.dispose()


def build_container(settings: Settings) -> Container:
    """The database, image store and services for ``settings`` (models are added by ML setup)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_password_hashing(settings.auth.argon2_time_cost, settings.auth.argon2_memory_kib)
    engine = make_engine(settings.database_url, settings.database.echo, settings.database.pool_size)
    store = ImageStore(settings.images_dir)
    limits = UploadLimits(
        max_bytes=settings.storage.max_upload_bytes,
        max_pixels=settings.storage.max_image_pixels,
        max_files=settings.storage.max_files_per_upload,
    )
    return Container(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        store=store,
        concepts=ConceptService(store, limits),
    )
