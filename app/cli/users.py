"""``repic users``: accounts an operator makes from the shell (the first admin)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import fail, open_container

users_app = typer.Typer(help="Accounts.", no_args_is_help=True)


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="Admin user name.")],
    promote: Annotated[
        bool,
        typer.Option(
            "--promote", help="Make an existing user an admin; its password stays as it is."
        ),
    ] = False,
    password: Annotated[
        str | None,
        typer.Option(help="Password (visible to other local users: prefer --password-file)."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help="Read the password from this file (its first line)."),
    ] = None,
) -> None:
    """Create an admin account, or make an existing user an admin (--promote).

    The new account's password comes from --password-file, --password, REPIC_ADMIN_PASSWORD,
    or, on a terminal only, a prompt (asked twice).
    """
    from app.db import session_scope
    from app.services.users import create_admin as make_admin
    from app.services.users import promote_admin, user_exists

    if promote:
        if password is not None or password_file is not None:
            fail("--promote keeps the user's password: drop --password/--password-file")
        with open_container() as container, session_scope(container.session_factory) as session:
            user = promote_admin(session, username)
            typer.echo(f"admin {user.username!r} ready (password unchanged)")
        return
    with open_container() as container:
        with container.session_factory() as session:
            # Checked before a password is asked for; the insert still refuses a late twin.
            if user_exists(session, username):
                fail(f"user {username!r} exists: add --promote to make it an admin "
                     "(its password is kept)")
        secret = _new_password(password, password_file)
        with session_scope(container.session_factory) as session:
            min_length = container.settings.auth.min_password_length
            user = make_admin(session, username, secret, min_length)
            typer.echo(f"admin {user.username!r} ready")


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _new_password(password: str | None, password_file: Path | None) -> str:
    """The password from the first source given; a prompt only where someone can answer it."""
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read --password-file {password_file}: {exc}")
        return lines[0] if lines else ""
    if password is not None:
        return password
    from_env = os.environ.get("REPIC_ADMIN_PASSWORD")
    if from_env:
        return from_env
    if not stdin_is_terminal():
        fail("no password given and no terminal to ask on: use --password-file PATH or "
             "set REPIC_ADMIN_PASSWORD")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
