"""``repic models``: the configured models (status, pull) and the tiny offline models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(
    help="Model weights: status, pull from the hub, tiny offline models.", no_args_is_help=True
)


@models_app.command("build-tiny")
def models_build_tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to write vlm/, clip/, detector/ to.")],
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
    copier: Annotated[bool, typer.Option(
        help="The VLM learns to copy concept names from its prompt (a warm-up of about 90 s "
        "on 2 CPU cores); --no-copier keeps it random (what the tests use).")] = True,
    warm_up_steps: Annotated[int, typer.Option(
        min=1, help="Warm-up steps of the name-copying VLM (more: steadier, slower).")] = 800,
) -> None:
    """Build tiny models (Qwen2.5-VL, CLIP, OWLv2) with no download: CLIP and OWLv2 random,
    the Qwen2.5-VL wired and warmed up to copy names (see trainer/tiny_copier.py)."""
    from app.ml.tiny import build_tiny_models
    from trainer.tiny_copier import CopierRecipe, build_tiny_copier

    def report(step: int, steps: int, loss: float) -> None:
        typer.echo(f"warm-up step {step}/{steps}, loss {loss:.3f}", err=True)

    def vlm_builder(path: Path, seed: int = 0) -> Path:
        recipe = CopierRecipe(steps=warm_up_steps, seed=seed)
        return build_tiny_copier(path, seed=seed, recipe=recipe, progress=report)

    paths = build_tiny_models(directory, force=force,
                              vlm_builder=vlm_builder if copier else None)
    for part, path in paths.items():
        typer.echo(f"{part:9s} {path}")
    typer.echo(
        "Use them with: REPIC_CAPTION__MODEL={vlm} REPIC_EMBEDDER__MODEL_NAME=local-dir:{clip} "
        "REPIC_EMBEDDER__PRETRAINED= REPIC_DETECTOR__MODEL={detector}".format(**paths)
    )


@models_app.command("status")
def models_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each configured model: where it is, its size, and the command that fixes a missing one."""
    import json

    from app.cli.context import current_settings
    from app.services.model_catalog import configured_models, human_size, model_state

    settings = current_settings()
    states = [model_state(entry) for entry in configured_models(settings)]
    if as_json:
        typer.echo(json.dumps({"profile": settings.models.profile,
                               "models": [s.public() for s in states]}, indent=2))
        return
    typer.echo(f"model profile: {settings.models.profile}")
    for state in states:
        size = human_size(state.size_bytes) if state.size_bytes is not None else "-"
        where = state.where or "not downloaded"
        typer.echo(f"{state.entry.role:9s} {state.entry.name}\n          {where} ({size})")
        if state.fix:
            typer.echo(typer.style(f"          fix: {state.fix}", fg=typer.colors.YELLOW))
    if any(not s.present for s in states):
        raise typer.Exit(1)


@models_app.command("pull")
def models_pull(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="cpu, gpu (a profile's models) or hub ids; default: the "
                       "configured models."),
    ] = None,
) -> None:
    """Download models into the Hugging Face cache: sizes first, a free-space check, a
    progress bar per file; resumable, checksum-verified, and a no-op for what is there."""
    from app.cli.context import current_settings, fail
    from app.services.model_catalog import (
        NotEnoughSpace,
        check_space,
        configured_models,
        hub_cache_dir,
        human_size,
        model_state,
        plan_pull,
        profile_models,
        pull,
        transformers_entry,
    )
    from app.settings import MODEL_PROFILES

    settings = current_settings()
    entries = []
    known = {e.repo_id: e for e in configured_models(settings) if e.repo_id}
    for profile in MODEL_PROFILES:
        known.update({e.repo_id: e for e in profile_models(profile) if e.repo_id})
    for name in names or []:
        if name in MODEL_PROFILES:
            entries += profile_models(name)
        else:  # a model we know keeps its own file patterns (open_clip repos hold two formats)
            entries.append(known.get(name) or transformers_entry("model", name))
    if not names:
        entries = configured_models(settings)
    todo = []
    for entry in entries:
        state = model_state(entry)
        if entry.repo_id is None:
            if not state.present:
                fail(f"{entry.role} {entry.name}: {state.fix}")
            typer.echo(f"{entry.role:9s} {entry.name}: local, nothing to download")
            continue
        try:
            plan = plan_pull(entry)
        except Exception as exc:  # the hub cannot be reached, or the repo does not exist
            fail(f"{entry.role} {entry.repo_id}: cannot ask the hub ({exc})")
        if not plan.files and state.present:
            typer.echo(f"{entry.role:9s} {entry.repo_id}: up to date ({state.where})")
            continue
        typer.echo(f"{entry.role:9s} {entry.repo_id}: {len(plan.files)} files, "
                   f"{human_size(plan.bytes)} to download")
        for filename, size in plan.files:
            typer.echo(f"            {filename} ({human_size(size)})")
        todo.append(plan)
    if not todo:
        typer.echo("every model is here")
        return
    try:
        check_space(todo, hub_cache_dir())
    except NotEnoughSpace as exc:
        fail(str(exc))
    for plan in todo:
        folder = pull(plan)
        typer.echo(f"{plan.entry.role:9s} {plan.entry.repo_id}: ready in {folder}")
    typer.echo("done: restart the app (`make run` / `repic serve`) to use them")
