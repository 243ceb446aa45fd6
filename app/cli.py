"""The ``repic`` operator command (Typer): serve, migrate, users, models, index, train, eval."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from app.settings import get_settings

app = typer.Typer(help="RePIC personalized captioning service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(config_app, name="config")
models_app = typer.Typer(help="Model files (tiny offline models for tests and demos).",
                         no_args_is_help=True)
index_app = typer.Typer(help="The FAISS index of concept photos.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(index_app, name="index")
jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
eval_app = typer.Typer(help="Evaluation: grounding metrics, RAP/RePIC import/export, runs.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _fail(message: str) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Upgrade the database first.")] = True,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
) -> None:
    """Run the web app (and, in the embedded profile, a local worker)."""
    import uvicorn

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        from app.migrate import upgrade

        upgrade(settings.database_url)
    typer.echo(f"RePIC on http://{host}:{port}  (data: {settings.data_dir}, db: "
               f"{settings.database_url.split('@')[-1]})")
    from worker.embedded import EmbeddedWorker, embedded_broker

    local_worker = None
    if settings.worker.embedded_worker and embedded_broker(settings):
        # No broker configured: run the jobs on a local worker over the SQLite broker.
        local_worker = EmbeddedWorker(settings).start()
        typer.echo(f"local worker started (log: {local_worker.log_path})")
    try:
        uvicorn.run(
            "app.asgi:app", host=host, port=port, workers=workers if not reload else 1,
            reload=reload, proxy_headers=True,
        )
    finally:
        if local_worker is not None:
            local_worker.stop()


@app.command("worker")
def worker_cmd(
    queues: Annotated[str, typer.Option(help="cpu, gpu or cpu,gpu.")] = "cpu",
    pool: Annotated[str | None, typer.Option(
        help="Celery pool; default prefork (gpu: one task per child, so CUDA lives and dies "
             "in the child).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        help="Parallel tasks (default: gpu 1, cpu the number of cores).")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start a Celery worker on the cpu or gpu queue (Flower works against the same broker)."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    if not wanted or any(q not in ("cpu", "gpu") for q in wanted):
        _fail("--queues must be cpu, gpu or cpu,gpu")
    from worker.celery_app import app as celery_app

    argv = ["worker", "-Q", ",".join(wanted), "--loglevel", loglevel,
            "--pool", pool or "prefork"]
    if "gpu" in wanted:
        argv += ["--concurrency", str(concurrency or 1)]
        if (pool or "prefork") == "prefork":
            argv += ["--max-tasks-per-child", "1"]
    elif concurrency:
        argv += ["--concurrency", str(concurrency)]
    celery_app.worker_main(argv)


@jobs_app.command("reap")
def jobs_reap() -> None:
    """Fail or re-queue running jobs whose worker stopped heart-beating."""
    from app.container import build_container
    from app.services.jobs import setup_jobs

    container = build_container(get_settings())
    try:
        setup_jobs(container, worker=True)
        actions = container.extras["jobs"].reap_stale()
        for job_id, action in actions:
            typer.echo(f"job {job_id}: {action}")
        typer.echo(f"{len(actions)} stale job(s)")
    finally:
        container.close()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the schema to a revision (default: the newest)."""
    from app.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database."""
    from app.migrate import current

    typer.echo(current(get_settings().database_url) or "(empty database)")


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="Admin user name.")],
    password: Annotated[
        str | None,
        typer.Option(help="Password; read from REPIC_ADMIN_PASSWORD or asked for if absent."),
    ] = None,
) -> None:
    """Create the first admin (or promote an existing user to admin)."""
    from app.container import build_container
    from app.db import session_scope
    from app.errors import DomainError
    from app.services.users import create_admin as make_admin

    password = password or os.environ.get("REPIC_ADMIN_PASSWORD") or getpass.getpass(
        "Password: "
    )
    settings = get_settings()
    container = build_container(settings)
    try:
        with session_scope(container.session_factory) as session:
            user = make_admin(session, username, password, settings.auth.min_password_length)
            typer.echo(f"admin {user.username!r} ready")
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        container.close()


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON (secrets masked)."""
    data = get_settings().model_dump(mode="json")
    data["auth"]["secret_key"] = "***"
    typer.echo(json.dumps(data, indent=2))


@config_app.command("docs")
def config_docs() -> None:
    """Print docs/configuration.md (every REPIC_ variable) as generated from the settings."""
    from app.config_docs import render_configuration_markdown

    typer.echo(render_configuration_markdown(), nl=False)


@models_app.command("build-tiny")
def models_build_tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to write vlm/, clip/, detector/ to.")],
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Build tiny random-weight models (Qwen2.5-VL, CLIP, OWLv2) with no download."""
    from app.ml.tiny import build_tiny_models

    paths = build_tiny_models(directory, force=force)
    for part, path in paths.items():
        typer.echo(f"{part:9s} {path}")
    typer.echo(
        "Use them with: REPIC_CAPTION__MODEL={vlm} REPIC_EMBEDDER__MODEL_NAME=local-dir:{clip} "
        "REPIC_EMBEDDER__PRETRAINED= REPIC_DETECTOR__MODEL={detector}".format(**paths)
    )


def _retrieval_container():  # type: ignore[no-untyped-def]
    from app.container import build_container
    from app.setup import setup_retrieval

    container = build_container(get_settings())
    service = setup_retrieval(container)
    return container, service


@index_app.command("verify")
def index_verify() -> None:
    """Check the index cache against the database (rebuilds it from stored rows if needed)."""
    container, service = _retrieval_container()
    try:
        typer.echo(json.dumps({"vectors": service.store.count(), "revision": service.revision,
                               "embedder": service.embedder_id,
                               "missing_embeddings": service.missing_embeddings_count()}))
    finally:
        service.close()
        container.close()


@index_app.command("rebuild")
def index_rebuild() -> None:
    """Rebuild the index cache from the embeddings stored in the database (no re-embedding)."""
    container, service = _retrieval_container()
    try:
        n = service.rebuild_from_db()
        service.save_now()
        typer.echo(f"rebuilt index with {n} vectors")
    finally:
        service.close()
        container.close()


@index_app.command("reembed")
def index_reembed() -> None:
    """Embed every photo with the configured embedder, then switch serving to it."""
    container, service = _retrieval_container()
    try:
        target = service.target_embedder or service.embedder
        if service.target_embedder is None and service.missing_embeddings_count() == 0:
            typer.echo(f"every photo already has an embedding from {service.embedder_id}")
            return
        target.load()

        def progress(done: int, total: int) -> None:
            typer.echo(f"\rembedded {done}/{total}", nl=False)

        report = service.reembed(target, progress)
        service.save_now()
        typer.echo(f"\n{json.dumps(report)}")
    finally:
        service.close()
        container.close()


@index_app.command("calibrate")
def index_calibrate(
    username: Annotated[str, typer.Argument(help="Whose photos to calibrate on.")],
) -> None:
    """Suggest retrieval.min_score from a user's own photos."""
    from sqlalchemy import select

    from app.models import User

    container, service = _retrieval_container()
    try:
        with container.session_factory() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                _fail(f"no user named {username!r}")
            typer.echo(json.dumps(service.calibrate(session, user), indent=2))
    finally:
        service.close()
        container.close()


@app.command()
def caption(
    photo: Annotated[Path, typer.Argument(help="The photo to caption.", exists=True,
                                           dir_okay=False)],
    user: Annotated[str, typer.Option("--user", "-u", help="Whose concepts to use.")],
    concept: Annotated[list[str] | None, typer.Option(
        "--concept", "-c", help="Pin a concept by name (repeatable).")] = None,
    question: Annotated[str | None, typer.Option(help="Your own question.")] = None,
    retrieve: Annotated[bool, typer.Option(help="Also retrieve concepts.")] = True,
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation length.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")]
    = False,
) -> None:
    """Caption PHOTO with a user's concepts (in-process, same pipeline as the API)."""
    import asyncio

    from sqlalchemy import select

    from app.container import build_container
    from app.errors import DomainError
    from app.models import User
    from app.setup import setup_services
    from app.storage import validate_image

    settings = get_settings()
    container = build_container(settings)
    try:
        setup_services(container)
        service = container.extras["captions"]
        with container.session_factory() as session:
            owner = session.scalar(select(User).where(User.username == user))
            if owner is None:
                _fail(f"no user named {user!r}")
            pinned = [c.id for c in container.concepts.get_by_names(session, owner, concept or [])]
        upload = validate_image(
            photo.read_bytes(), photo.name, "", max_bytes=settings.storage.max_upload_bytes,
            max_pixels=settings.storage.max_image_pixels,
        )

        async def run():  # type: ignore[no-untyped-def]
            try:
                return await service.caption(
                    owner, upload, pinned_ids=pinned, question=question,
                    max_new_tokens=max_new_tokens, use_retrieval=retrieve,
                )
            finally:
                await service.backend.aclose()

        outcome = asyncio.run(run())
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        container.close()
    row = outcome.caption
    if as_json:
        typer.echo(json.dumps({
            "id": row.id, "caption": row.caption, "question": row.question,
            "concepts": row.concepts, "model_version": outcome.model_version,
            "tiny_model": row.tiny_model, "timings_ms": outcome.timings_ms,
        }, indent=2))
    else:
        names = ", ".join(f"<{c.name}>" for c in outcome.concepts) or "none"
        typer.echo(row.caption)
        typer.echo(f"[concepts: {names}; {'tiny test model; ' if row.tiny_model else ''}"
                   f"{outcome.timings_ms.get('total', 0):.0f} ms]", err=True)


@eval_app.command("grounding")
def eval_grounding(
    results: Annotated[Path, typer.Argument(help="JSON list of [image, [names], caption, q] "
                                                 "(or .jsonl).")],
    case_sensitive: Annotated[bool, typer.Option(
        "--case-sensitive", help="Compare names case-sensitively (paper: 2-concept).")] = False,
    mode: Annotated[str, typer.Option(help="paper (the paper's quirks) or strict.")] = "paper",
) -> None:
    """Personal-grounding precision/recall/F1 of a result file, as JSON."""
    from trainer.evaluate import MODES, ResultsFormatError, grounding_cli

    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}")
    try:
        summary = grounding_cli(results, case_sensitive=case_sensitive, mode=mode)
    except (OSError, ResultsFormatError) as exc:
        _fail(f"error: {exc}")
    typer.echo(json.dumps(summary, indent=2))


def _eval_container(models: bool = False):  # type: ignore[no-untyped-def]
    from app.container import build_container

    container = build_container(get_settings())
    if models:
        from app.setup import setup_services

        setup_services(container)
    return container


def _eval_user(session, username: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.models import User

    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        _fail(f"no user named {username!r}")
    return user


@eval_app.command("import-db")
def eval_import_db(
    database: Annotated[Path, typer.Argument(help="RAP/RePIC database JSON.")],
    root: Annotated[Path, typer.Option(help="Folder the image paths are relative to.")],
    user: Annotated[str, typer.Option(help="Whose concepts they become.")],
    merge: Annotated[bool, typer.Option(
        help="Add photos to existing concepts of the same name instead of refusing.")] = False,
) -> None:
    """Import a RAP/RePIC concept database as a user's concepts (all or nothing)."""
    from app.errors import DomainError
    from app.services.rap_format import import_database
    from app.setup import setup_retrieval

    container = _eval_container()
    try:
        # Embeddings and the index follow the photos.
        container.extras.setdefault("closers", []).append(setup_retrieval(container).close)
        with container.session_factory() as session:
            owner = _eval_user(session, user)
            report = import_database(session, container.concepts, owner, database, root,
                                     on_conflict="merge" if merge else "error")
        typer.echo(json.dumps(report.to_dict(), indent=2))
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        container.close()


@eval_app.command("import-queries")
def eval_import_queries(
    queries: Annotated[Path, typer.Argument(help="JSON {image_path: [names]}.")],
    root: Annotated[Path, typer.Option(help="Folder the image paths are relative to.")],
    user: Annotated[str, typer.Option(help="Owner of the set (and of the concepts named).")],
    name: Annotated[str, typer.Option(help="Name of the new evaluation set.")],
    case_sensitive: Annotated[bool, typer.Option(
        "--case-sensitive", help="Score names case-sensitively (paper: 2-concept).")] = False,
) -> None:
    """Import a query set as an evaluation set (photos copied into the image store)."""
    from app.errors import DomainError
    from app.services.rap_format import ImportLimits, import_queries

    container = _eval_container()
    settings = container.settings
    try:
        with container.session_factory() as session:
            owner = _eval_user(session, user)
            row = import_queries(
                session, container.store, owner, queries, root, name, case_sensitive,
                ImportLimits(settings.storage.max_upload_bytes, settings.storage.max_image_pixels))
            typer.echo(json.dumps({"id": row.id, "name": row.name, "queries": len(row.queries),
                                   "case_sensitive": row.case_sensitive}))
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        container.close()


@eval_app.command("export-db")
def eval_export_db(
    out: Annotated[Path, typer.Argument(help="Database JSON to write (photos go beside it).")],
    user: Annotated[str, typer.Option(help="Whose concepts to export.")],
) -> None:
    """Export a user's concepts in the RAP/RePIC database format."""
    from app.services.rap_format import export_database

    container = _eval_container()
    try:
        with container.session_factory() as session:
            owner = _eval_user(session, user)
            typer.echo(json.dumps(export_database(session, container.store, owner, out)))
    finally:
        container.close()


@eval_app.command("run")
def eval_run(
    version: Annotated[int, typer.Option(help="Model version id.")],
    set_name: Annotated[str, typer.Option("--set", help="Evaluation set name (or id).")],
    setting: Annotated[str, typer.Option(help="skip, retrieval or wrong.")] = "skip",
    k: Annotated[int | None, typer.Option(help="Retrieval K (default 2 or 4).")] = None,
    user: Annotated[str | None, typer.Option(
        help="Owner of the set, when several users have a set of that name.")] = None,
) -> None:
    """Evaluate a model version on a set in this process and print the metrics."""
    from sqlalchemy import select

    from app.errors import DomainError
    from app.models import EvaluationSet

    container = _eval_container(models=True)
    try:
        with container.session_factory() as session:
            query = select(EvaluationSet)
            if set_name.isdigit():
                query = query.where(EvaluationSet.id == int(set_name))
            else:
                query = query.where(EvaluationSet.name == set_name)
            if user is not None:
                query = query.where(EvaluationSet.owner_id == _eval_user(session, user).id)
            found = list(session.scalars(query))
        if len(found) != 1:
            _fail(f"{len(found)} evaluation sets match {set_name!r}"
                  + ("; name the owner with --user" if found else ""))
        service = container.extras["evaluations"]

        def progress(done: int, total: int) -> None:
            typer.echo(f"\rcaptioned {done}/{total}", nl=False, err=True)

        row = service.run(version, found[0].id, {"setting": setting, "k": k}, progress)
        typer.echo("", err=True)
        typer.echo(json.dumps({"evaluation_id": row.id, "state": row.state, **row.metrics},
                              indent=2))
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        container.close()


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML of trainer arguments (see trainer/configs/).", exists=True,
        dir_okay=False)] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override one argument: --set key=value (repeatable).")] = None,
    tiny: Annotated[bool, typer.Option(
        "--tiny", help="End-to-end toy run on CPU with the tiny offline model.")] = False,
) -> None:
    """Run RePIC GRPO post-training (TRL + PEFT LoRA) outside the job queue."""
    from trainer.grpo import train_cli

    if config is None and not tiny:
        _fail("give --config CONFIG.yaml (e.g. trainer/configs/paper.yaml) or --tiny")
    try:
        train_cli(config, list(overrides or []), tiny)
    except ValueError as exc:
        _fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
