"""``repic db``: the database schema, through the Alembic migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.context import current_settings, expected_errors

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the schema to a revision (default: the newest)."""
    from app.migrate import upgrade

    settings = current_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with expected_errors():  # an unreachable database: one line, not a traceback
        upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database."""
    from app.migrate import current

    with expected_errors():
        revision = current(current_settings().database_url)
    typer.echo(revision or "(empty database)")
