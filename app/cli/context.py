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
    """The settings of this run.

    Looked up as ``app.cli.get_settings`` at call time, not imported here: that attribute is
    the one place tests put their own settings.
    """
    from app import cli

    return cli.get_settings()


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
    from app.model_services import ModelLoading
    from app.wiring import build_container

    loading = models or ModelLoading.NONE
    with expected_errors(runs_models=loading is not ModelLoading.NONE):
        container = build_container(current_settings(), loading)
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
