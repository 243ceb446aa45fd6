"""The composition root: builds every long-lived object of a process once, from the settings,
handing each its collaborators through its constructor.

Who builds what (see docs/architecture.md for the picture)::

    settings -> engine, session factory, image store
             -> CelerySender (app.queue)  -> JobService
             -> ModelServices (retrieval, captioning; at start or on first use)
             -> ConceptService(hooks = the retrieval index, when loaded at start)
             -> VersionService(gate = EvaluationGate)
             -> EvaluationSetService
             -> EvaluationService(sets, jobs, captions, retrieval)
             -> TrainingService(jobs, versions, post_training = evaluation, detector)
             -> CaptionBatchService, IndexJobs
             -> LibraryService(concepts), LibraryImports(jobs), LibraryCaptions(jobs, captions)
             -> LibraryDiscovery(jobs, retrieval, concepts, library captions)
             -> Maintenance(jobs, store, purges, discovery's due jobs)
             -> LibraryExportService(store)   (zip/JSON/CSV exports, XMP through exiftool)
             -> JobRuntime(jobs, {kind: runner})   (what worker tasks call)
             -> ReadinessService
             -> BrowserSessions, LoginThrottle -> Accounts (logins, password changes)

Entry points (``app.main``, ``app.cli``, ``worker``) call :func:`build_container` and nothing
else; nothing below this module imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.container import Container
from app.db import make_engine, make_session_factory
from app.logging_setup import request_id_var
from app.model_services import ModelLoading, ModelServices
from app.queue import CelerySender, create_celery_app
from app.security import configure_password_hashing
from app.services.accounts import Accounts
from app.services.browser_sessions import BrowserSessions
from app.services.caption_batches import CaptionBatchService
from app.services.concept_shares import ConceptShareService
from app.services.concepts import ConceptService, UploadLimits
from app.services.evaluation import EvaluationService
from app.services.evaluation_gate import EvaluationGate
from app.services.evaluation_sets import EvaluationSetService
from app.services.index_jobs import IndexJobs
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobRuntime
from app.services.jobs import JobService
from app.services.library import LibraryService
from app.services.library_captions import LibraryCaptions
from app.services.library_discovery import LibraryDiscovery
from app.services.library_export import LibraryExportService
from app.services.library_import import LibraryImports
from app.services.login_throttle import LoginThrottle
from app.services.maintenance import Maintenance
from app.services.model_catalog import force_offline
from app.services.photo_refs import PhotoReferences
from app.services.readiness import ReadinessService
from app.services.training import TrainingService
from app.services.versions import VersionService, run_coroutine_sync
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)


def build_container(settings: Settings, models: ModelLoading = ModelLoading.NONE) -> Container:
    """Everything one process needs. ``models`` says when the model services are built: the
    app loads them all at start, a worker on first use, database-only tools never."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.models.offline:
        force_offline()  # weights come from `repic models pull`, never from a start-up
    configure_password_hashing(
        settings.auth.argon2_time_cost,
        settings.auth.argon2_memory_kib,
        max_concurrent=settings.auth.max_concurrent_password_hashes,
        wait_s=settings.auth.password_hash_wait_s,
    )
    engine = make_engine(settings.database_url, settings.database.echo, settings.database.pool_size)
    session_factory = make_session_factory(engine)
    # The store asks the database before it deletes a file other rows may share.
    store = ImageStore(settings.images_dir, is_referenced=PhotoReferences(session_factory))
    warnings: list[str] = []

    sender = CelerySender(create_celery_app(settings))
    jobs = JobService(session_factory, settings.worker, sender)

    def enqueue_embedding(image_ids: Sequence[int]) -> None:
        with session_factory() as session:
            jobs.create(
                session,
                JobKind.EMBED_IMAGES,
                {"image_ids": list(image_ids)},
                None,
                request_id=request_id_var.get(),
            )

    def enqueue_reembed() -> None:
        """The configured embedder changed (e.g. another model profile): embed every photo
        with it in the background; the old one serves until that job switches over."""
        with session_factory() as session:
            if not jobs.has_active(session, JobKind.REEMBED):
                jobs.create(session, JobKind.REEMBED, {}, None, request_id=request_id_var.get())

    model_services = ModelServices(
        settings, session_factory, store, models, warnings, enqueue_embedding,
        enqueue_reembed if models is ModelLoading.ALL else None,
    )
    browser_sessions = BrowserSessions(session_factory, settings.auth.session_max_age_s)
    throttle = LoginThrottle(session_factory, settings.auth)
    library_imports = LibraryImports(
        session_factory, store, settings.storage, jobs, settings.library_staging_dir
    )
    closers = [sender.close, model_services.close]
    try:
        model_services.load()
        retrieval = model_services.loaded_retrieval()
        concepts = ConceptService(
            store,
            UploadLimits(
                max_bytes=settings.storage.max_upload_bytes,
                max_pixels=settings.storage.max_image_pixels,
                max_files=settings.storage.max_files_per_upload,
            ),
            # The index follows photo changes in this process when it was loaded at start.
            hooks=retrieval.index if retrieval is not None else None,
        )
        # Sharing moves the invitee's revision; the loaded index follows it in this process.
        shares = ConceptShareService(retrieval.index if retrieval is not None else None)
        versions = VersionService(
            session_factory,
            base_model=model_services.served_model(),
            backend_getter=model_services.loaded_backend,
            gate=EvaluationGate(settings),
        )
        evaluation_sets = EvaluationSetService()
        evaluations = EvaluationService(
            settings,
            session_factory,
            store,
            evaluation_sets,
            jobs,
            captions=model_services.captions,
            retrieval=model_services.loaded_retrieval,
        )
        training = TrainingService(
            settings,
            session_factory,
            jobs,
            versions,
            store,
            served_model=model_services.served_model,
            post_training=evaluations.post_training,
            detector=model_services.detector,
        )
        caption_batches = CaptionBatchService(
            session_factory, store, settings.storage, jobs, model_services.captions
        )
        index_jobs = IndexJobs(model_services.retrieval)
        library = LibraryService(store, concepts)
        library_captions = LibraryCaptions(
            session_factory, store, settings.storage, settings.caption, jobs,
            model_services.captions,
        )
        library_discovery = LibraryDiscovery(
            session_factory, store, settings.library, settings.storage, jobs,
            model_services.retrieval, concepts, library_captions,
        )
        maintenance = Maintenance(
            settings,
            jobs,
            store,
            PhotoReferences(session_factory).all,
            purges=(browser_sessions.purge, throttle.purge, library_imports.purge_staging),
            discover=library_discovery.enqueue_due,
        )
        closers.append(maintenance.stop)
        runtime = JobRuntime(
            jobs,
            {
                JobKind.TRAINING: training.run,
                JobKind.EVALUATION: evaluations.run_job,
                JobKind.REEMBED: index_jobs.reembed,
                JobKind.CAPTION_BATCH: caption_batches.run,
                JobKind.REBUILD_INDEX: index_jobs.rebuild,
                JobKind.EMBED_IMAGES: index_jobs.embed_images,
                JobKind.LIBRARY_IMPORT: library_imports.run,
                JobKind.LIBRARY_CAPTION: library_captions.run,
                JobKind.LIBRARY_DISCOVER: library_discovery.run,
            },
        )
        if models is ModelLoading.ALL:
            # An app replica started after an activation serves the active adapter too.
            problem = run_coroutine_sync(versions.ensure_active_adapter_loaded())
            if problem:
                warnings.append(problem)
    except BaseException:
        for closer in reversed(closers):
            closer()
        engine.dispose()
        raise
    return Container(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        store=store,
        models=model_services,
        concepts=concepts,
        shares=shares,
        sender=sender,
        jobs=jobs,
        job_runtime=runtime,
        versions=versions,
        evaluation_sets=evaluation_sets,
        evaluations=evaluations,
        training=training,
        caption_batches=caption_batches,
        library=library,
        library_imports=library_imports,
        library_captions=library_captions,
        library_discovery=library_discovery,
        library_exports=LibraryExportService(store),
        readiness=ReadinessService(engine, store, model_services, sender, warnings),
        maintenance=maintenance,
        accounts=Accounts(settings.auth, throttle, browser_sessions),
        browser_sessions=browser_sessions,
        warnings=warnings,
        closers=closers,
    )
