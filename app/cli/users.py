"""``repic users``: accounts an operator makes from the shell (the first admin)."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer

from app.cli.context import open_container

users_app = typer.Typer(help="Accounts.", no_args_is_help=True)


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="Admin user name.")],
    password: Annotated[
        str | None,
        typer.Option(help="Password; read from REPIC_ADMIN_PASSWORD or asked for if absent."),
    ] = None,
) -> None:
    """Create the first admin (or promote an existing user to admin)."""
    from app.db import session_scope
    from app.services.users import create_admin as make_admin

    password = password or os.environ.get("REPIC_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    with open_container() as container, session_scope(container.session_factory) as session:
        min_length = container.settings.auth.min_password_length
        user = make_admin(session, username, password, min_length)
        typer.echo(f"admin {user.username!r} ready")
