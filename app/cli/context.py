"""What every ``repic`` command shares: the settings, the container it opens, how it fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.container import Container
    from app.model_services import ModelLoading
    from app.models import User
    from app.settings import Settings


def current_settings() -> Settings:
    """The settings of this run; settings it cannot run with :func:`fail` with one line per
    problem, each naming its ``REPIC_`` variable.

    Looked up as ``app.cli.get_settings`` at call time, not imported here: that attribute is
    the one place tests put their own settings.
    """
    from app import cli
    from app.settings import SettingsError

    try:
        return cli.get_settings()
    except SettingsError as exc:
        fail(str(exc))


def report_unknown_settings() -> None:
    """Warn (stderr) about every ``REPIC_`` name no setting reads, with a "did you mean"."""
    from app.settings import environment_warnings

    for warning in environment_warnings():
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)


def ensure_database(settings: Settings) -> None:
    """:func:`fail` in one line, naming ``REPIC_DATABASE__URL``, when the database does not
    answer: what a long-running command checks before it starts."""
    from app.db import ensure_reachable

    settings.data_dir.mkdir(parents=True, exist_ok=True)  # where SQLite's file goes
    with expected_errors():
        ensure_reachable(settings.database_url)


def fail(message: str) -> NoReturn:
    """Print ``message`` in red on stderr and exit with code 2 (an operator's mistake)."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@contextmanager
def expected_errors(runs_models: bool = False) -> Iterator[None]:
    """Turn what an operator can cause into one :func:`fail` line: a domain error and, where
    the command runs models, a model-layer error (as the API words it). Anything else is a bug
    and keeps its traceback."""
    from app.errors import DomainError

    model_errors: tuple[type[Exception], ...] = ()
    if runs_models:
        # Imported only here: the model layer must not slow down commands that never load it.
        from app.api.errors import MODEL_ERRORS

        model_errors = MODEL_ERRORS
    try:
        yield
    except DomainError as exc:
        fail(exc.detail)
    except model_errors as exc:
        from app.api.errors import as_domain_error

        fail(as_domain_error(exc).detail)


@contextmanager
def open_container(models: ModelLoading | None = None) -> Iterator[Container]:
    """The container of one command, built from :func:`current_settings` and always closed.

    ``models`` is when it builds its model services (``None``: never, as
    ``ModelLoading.NONE``; a default that does not import the model layer when the CLI
    starts). Expected errors, from building or from the body, end in :func:`expected_errors`.
    """
    from app.db import ensure_reachable
    from app.model_services import ModelLoading
    from app.wiring import build_container

    loading = models or ModelLoading.NONE
    with expected_errors(runs_models=loading is not ModelLoading.NONE):
        settings = current_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # where SQLite's file goes
        # A command that needs the database says in one line that it cannot reach it.
        ensure_reachable(settings.database_url)
        container = build_container(settings, loading)
        try:
            yield container
        finally:
            container.close()


def user_named(session: Session, name: str) -> User:
    """The user called ``name``, or :func:`fail` saying there is none."""
    from sqlalchemy import select

    from app.models import User

    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        fail(f"no user named {name!r}")
    return user
