"""``repic caption``: caption one photo in this process, through the same pipeline as the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.context import open_container, user_named

if TYPE_CHECKING:
    from app.services.captions import CaptionOutcome


def caption(
    photo: Annotated[
        Path, typer.Argument(help="The photo to caption.", exists=True, dir_okay=False)
    ],
    user: Annotated[str, typer.Option("--user", "-u", help="Whose concepts to use.")],
    concept: Annotated[
        list[str] | None,
        typer.Option("--concept", "-c", help="Pin a concept by name (repeatable)."),
    ] = None,
    question: Annotated[str | None, typer.Option(help="Your own question.")] = None,
    retrieve: Annotated[bool, typer.Option(help="Also retrieve concepts.")] = True,
    max_new_tokens: Annotated[int | None, typer.Option(help="Generation length.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
) -> None:
    """Caption PHOTO with a user's concepts (in-process, same pipeline as the API)."""
    import asyncio

    from app.api.routes.captions import version_summary
    from app.model_services import ModelLoading
    from app.storage import validate_image

    with open_container(ModelLoading.ALL) as container:
        settings = container.settings
        service = container.models.captions()
        with container.session_factory() as session:
            owner = user_named(session, user)
            pinned = [c.id for c in container.concepts.get_by_names(session, owner, concept or [])]
        upload = validate_image(
            photo.read_bytes(),
            photo.name,
            "",
            max_bytes=settings.storage.max_upload_bytes,
            max_pixels=settings.storage.max_image_pixels,
        )

        async def run() -> CaptionOutcome:
            try:
                return await service.caption(
                    owner,
                    upload,
                    pinned_ids=pinned,
                    question=question,
                    max_new_tokens=max_new_tokens,
                    use_retrieval=retrieve,
                )
            finally:
                await service.backend.aclose()

        outcome = asyncio.run(run())
    row = outcome.caption
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": row.id,
                    "caption": row.caption,
                    "question": row.question,
                    "concepts": row.concepts,
                    "model_version": version_summary(outcome.model_version),
                    "tiny_model": row.tiny_model,
                    "timings_ms": outcome.timings_ms,
                },
                indent=2,
            )
        )
    else:
        names = ", ".join(f"<{c.name}>" for c in outcome.concepts) or "none"
        typer.echo(row.caption)
        typer.echo(
            f"[concepts: {names}; {'tiny test model; ' if row.tiny_model else ''}"
            f"{outcome.timings_ms.get('total', 0):.0f} ms]",
            err=True,
        )
