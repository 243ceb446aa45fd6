"""``repic train``: RePIC GRPO post-training in this process, outside the job queue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import fail


def train(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML of trainer arguments (see trainer/configs/).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one argument: --set key=value (repeatable)."),
    ] = None,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="End-to-end toy run on CPU with the tiny offline model.")
    ] = False,
) -> None:
    """Run RePIC GRPO post-training (TRL + PEFT LoRA) outside the job queue."""
    from trainer.grpo import train_cli

    if config is None and not tiny:
        fail("give --config CONFIG.yaml (e.g. trainer/configs/paper.yaml) or --tiny")
    try:
        train_cli(config, list(overrides or []), tiny)
    except ValueError as exc:
        fail(str(exc))
