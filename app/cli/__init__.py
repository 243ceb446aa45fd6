"""The ``repic`` operator command (Typer): every command and group, registered in one place.

One module per command or group (``serve``, ``db``, ``users``, ``config``, ``models``,
``index``, ``jobs``, ``caption``, ``eval``, ``data``, ``train``, ``library``); what they share
is in :mod:`app.cli.context`. Heavy imports stay inside the commands, so ``repic --help`` is fast.
"""

from __future__ import annotations

import typer

from app.cli.caption import caption
from app.cli.config import config_app
from app.cli.context import report_unknown_settings
from app.cli.data import data_app
from app.cli.db import db_app
from app.cli.evaluation import eval_app
from app.cli.index import index_app
from app.cli.jobs import jobs_app
from app.cli.library import library_app
from app.cli.models import models_app
from app.cli.serve import serve, worker_cmd
from app.cli.train import train
from app.cli.users import users_app
from app.cli.versions import versions_app

# Read through this attribute by app.cli.context.current_settings: tests replace it.
from app.settings import get_settings

__all__ = ["app", "get_settings", "main"]

app = typer.Typer(help="RePIC personalized captioning service.", no_args_is_help=True)


@app.callback()
def _before_every_command(ctx: typer.Context) -> None:
    # The worker reports them in its own log (worker.celery_app), also under `celery -A`.
    if ctx.invoked_subcommand != "worker":
        report_unknown_settings()


app.command()(serve)
app.command("worker")(worker_cmd)
app.command()(caption)
app.command()(train)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(index_app, name="index")
app.add_typer(jobs_app, name="jobs")
app.add_typer(eval_app, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(versions_app, name="versions")
app.add_typer(library_app, name="library")


def main() -> None:
    app()
