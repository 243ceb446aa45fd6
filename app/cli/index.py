"""``repic index``: upkeep of the FAISS index of concept photos (verify, rebuild, re-embed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.context import open_container, user_named

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
def index_verify() -> None:
    """Check the index cache against the database (rebuilds it from stored rows if needed)."""
    with _open_retrieval() as (_, service):
        typer.echo(
            json.dumps(
                {
                    "vectors": service.index.store.count(),
                    "revision": service.index.revision,
                    "embedder": service.index.embedder_id,
                    "missing_embeddings": service.index.missing_embeddings_count(),
                }
            )
        )


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
