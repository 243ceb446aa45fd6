"""``repic models``: model files on disk (the tiny offline models for tests and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(
    help="Model files (tiny offline models for tests and demos).", no_args_is_help=True
)


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
