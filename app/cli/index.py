"""``repic index``: upkeep of the FAISS index of concept photos (verify, rebuild, re-embed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.context import fail, open_container, user_named

if TYPE_CHECKING:
    from app.container import Container
    from app.services.retrieval import RetrievalService

index_app = typer.Typer(help="The FAISS index of concept photos.", no_args_is_help=True)


@contextmanager
def _open_retrieval() -> Iterator[tuple[Container, RetrievalService]]:
    """A container with retrieval loaded at start, and its retrieval service (closed with
    the container)."""
    from app.model_services import ModelLoading

    with open_container(ModelLoading.RETRIEVAL) as container:
        yield container, container.models.retrieval()


@index_app.command("verify")
def index_verify(
    app_url: Annotated[
        str | None,
        typer.Option("--app", help="A running app's base URL: compare the index it serves."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="REPIC_ADMIN_TOKEN", help="An admin's API token for --app."),
    ] = None,
) -> None:
    """Check, without changing anything, a running app's index (--app) and the photo files
    against the database (exit 1 when they disagree); the cache on disk is reported too."""
    from app.model_services import ModelLoading
    from app.services.index_audit import DatabaseIndex, check_app, check_cache, check_files

    with open_container(ModelLoading.NONE) as container, \
            container.session_factory() as session:
        db = DatabaseIndex.read(session)
        cache_problems = check_cache(db, container.settings.index_dir)
        problems, files = check_files(
            session, container.store, container.settings.storage.orphan_grace_s
        )
    app_status = None
    if app_url:
        app_status = _app_index_status(app_url, token)
        problems += check_app(db, app_status)
    report = {
        "ok": not problems,
        "embedder": db.embedder_id,
        "vectors": sum(db.vectors.values()),
        "owners": len(db.vectors),
        "files_checked": files,
        # A cache behind the database is rebuilt at the next start (and a running app saves
        # a second or so after each change): reported, not a failure.
        "cache": {"ok": not cache_problems, "problems": cache_problems},
        "app": None if app_status is None else {"url": app_url,
                                                "vectors": app_status.get("vectors")},
        "problems": problems,
    }
    typer.echo(json.dumps(report, indent=2))
    if problems:
        raise typer.Exit(1)


def _app_index_status(url: str, token: str | None) -> dict[str, Any]:
    import httpx

    if not token:
        fail("--app needs an admin's API token (--token or REPIC_ADMIN_TOKEN)")
    try:
        r = httpx.get(f"{url.rstrip('/')}/api/admin/index/status",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    if r.status_code != 200:
        fail(f"{url} answered {r.status_code}: {r.text[:200]}")
    return dict(r.json())


@index_app.command("rebuild")
def index_rebuild() -> None:
    """Rebuild the index cache from the embeddings stored in the database (no re-embedding)."""
    with _open_retrieval() as (_, service):
        n = service.index.rebuild_from_db()
        service.index.save_now()
        typer.echo(f"rebuilt index with {n} vectors")


@index_app.command("reembed")
def index_reembed() -> None:
    """Embed every photo with the configured embedder, then switch serving to it."""
    with _open_retrieval() as (_, service):
        target = service.index.target_embedder or service.index.embedder
        if service.index.target_embedder is None and service.index.missing_embeddings_count() == 0:
            typer.echo(f"every photo already has an embedding from {service.index.embedder_id}")
            return
        target.load()

        def progress(done: int, total: int) -> None:
            typer.echo(f"\rembedded {done}/{total}", nl=False)

        report = service.index.reembed(target, progress)
        service.index.save_now()
        typer.echo(f"\n{json.dumps(report)}")


@index_app.command("calibrate")
def index_calibrate(
    username: Annotated[str, typer.Argument(help="Whose photos to calibrate on.")],
) -> None:
    """Suggest retrieval.min_score from a user's own photos."""
    with _open_retrieval() as (container, service), container.session_factory() as session:
        user = user_named(session, username)
        typer.echo(json.dumps(service.calibrate(session, user), indent=2))
