"""``repic config``: the effective settings and the page that documents them."""

from __future__ import annotations

import json

import typer

from app.cli.context import current_settings

config_app = typer.Typer(help="Settings.", no_args_is_help=True)


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON (secrets and URL passwords masked)."""
    from app.settings import redacted

    typer.echo(json.dumps(redacted(current_settings().model_dump(mode="json")), indent=2))


@config_app.command("docs")
def config_docs() -> None:
    """Print docs/configuration.md (every REPIC_ variable) as generated from the settings."""
    from app.config_docs import render_configuration_markdown

    typer.echo(render_configuration_markdown(), nl=False)
