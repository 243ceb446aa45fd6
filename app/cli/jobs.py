"""``repic jobs``: upkeep of the background-job rows."""

from __future__ import annotations

import typer

from app.cli.context import open_container

jobs_app = typer.Typer(help="Background jobs.", no_args_is_help=True)


@jobs_app.command("reap")
def jobs_reap() -> None:
    """Fail or re-queue running jobs whose worker stopped heart-beating."""
    with open_container() as container:
        actions = container.jobs.reap_stale()
        for job_id, action in actions:
            typer.echo(f"job {job_id}: {action}")
        typer.echo(f"{len(actions)} stale job(s)")
