"""``repic versions``: model versions made elsewhere (import an adapter or a merged model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import expected_errors, open_container

versions_app = typer.Typer(help="Model versions (import a LoRA adapter or a merged model).",
                           no_args_is_help=True)


@versions_app.command("import")
def versions_import(
    source: Annotated[str, typer.Argument(help="A PEFT LoRA adapter folder, or with --merged "
                                               "a full model (hub id or folder).")],
    name: Annotated[str | None, typer.Option(help="Version name (default: the folder's).")] = None,
    merged: Annotated[bool, typer.Option("--merged", help="A full merged model, not an adapter.")
                      ] = False,
    allow_other_base: Annotated[
        bool, typer.Option(help="Accept an adapter whose recorded base has another name.")
    ] = False,
) -> None:
    """Register a model made elsewhere as a candidate version (evaluate, then activate it
    like a trained one; the paper's RePIC LoRA is such an adapter)."""
    from app.model_services import ModelLoading
    from app.services.version_import import import_adapter, import_merged_model

    with open_container(ModelLoading.NONE) as container, expected_errors(), \
            container.session_factory() as session:
        if merged:
            version = import_merged_model(container.versions, session, source, name=name)
            notes: list[str] = []
        else:
            version, report = import_adapter(
                container.versions, session, Path(source), container.settings.adapters_dir,
                name=name, allow_other_base=allow_other_base,
            )
            notes = report.notes
        typer.echo(json.dumps({"id": version.id, "name": version.name, "state": version.state,
                               "base_model": version.base_model,
                               "adapter_path": version.adapter_path, "notes": notes}, indent=2))
        for note in notes:
            typer.secho(note, fg=typer.colors.YELLOW, err=True)
