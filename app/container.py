"""The long-lived objects of one process, as typed fields; built by :mod:`app.wiring`.

Nothing here is created on import and nothing is added after construction: the container is
a record of what the composition root built (tests and the CLI build their own from settings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.model_services import ModelServices
from app.queue import CelerySender
from app.services.accounts import Accounts
from app.services.browser_sessions import BrowserSessions
from app.services.caption_batches import CaptionBatchService
from app.services.concept_shares import ConceptShareService
from app.services.concepts import ConceptService
from app.services.evaluation import EvaluationService
from app.services.evaluation_sets import EvaluationSetService
from app.services.job_runtime import JobRuntime
from app.services.jobs import JobService
from app.services.library import LibraryService
from app.services.library_captions import LibraryCaptions
from app.services.library_discovery import LibraryDiscovery
from app.services.library_export import LibraryExportService
from app.services.library_import import LibraryImports
from app.services.maintenance import Maintenance
from app.services.readiness import ReadinessService
from app.services.training import TrainingService
from app.services.versions import VersionService
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    store: ImageStore
    models: ModelServices
    concepts: ConceptService
    #: Concepts shared read-only with other accounts (both sides).
    shares: ConceptShareService
    sender: CelerySender
    jobs: JobService
    job_runtime: JobRuntime
    versions: VersionService
    evaluation_sets: EvaluationSetService
    evaluations: EvaluationService
    training: TrainingService
    caption_batches: CaptionBatchService
    #: The personal photo library: its photos, imports and caption jobs.
    library: LibraryService
    library_imports: LibraryImports
    library_captions: LibraryCaptions
    #: Concept discovery: clusters of unnamed subjects, suggested as new concepts.
    library_discovery: LibraryDiscovery
    #: Zip (photos + XMP), JSON and CSV exports; XMP sidecars next to imported originals.
    library_exports: LibraryExportService
    readiness: ReadinessService
    #: Reaping and sweeping in the background (started by the app's lifespan).
    maintenance: Maintenance
    #: Logins (throttled), password changes; the browser sessions they start and end.
    accounts: Accounts
    browser_sessions: BrowserSessions
    #: Problems found while building (model fallbacks, a stale index): pages and /api/ready.
    warnings: list[str] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                log.exception("closing %s failed", closer)
        self.engine.dispose()
