"""``repic library``: import a folder into a user's photo library, caption the library,
discover unnamed subjects (``export`` and ``xmp``, the exports and XMP sidecars, are in
:mod:`app.cli.library_export`).

All three run in this process as job rows (progress, ETA and a cancel button on the job pages like
any other job; Ctrl-C cancels between two photos, and running the command again goes on where
it stopped). No worker is needed.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.context import fail, open_container, user_named
from app.cli.library_export import export_cmd, xmp_cmd

if TYPE_CHECKING:
    from app.container import Container
    from app.models import Job, User

library_app = typer.Typer(help="Users' photo libraries.", no_args_is_help=True)


def _run_here(container: Container, owner: User, job: Job, describe: Callable[[Job], str]) -> Job:
    """Run ``job`` in this process, printing its progress on stderr every second; Ctrl-C
    asks it to stop between two photos."""
    from app.models import Job as JobRow

    stop = threading.Event()
    interrupted = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            with container.session_factory() as session:
                row = session.get(JobRow, job.id)
                if row is None:
                    return
                if interrupted.is_set() and not row.cancel_requested:
                    container.jobs.cancel(session, owner, job.id)
                typer.echo(f"\r{describe(row)}", err=True, nl=False)

    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    watcher = threading.Thread(target=watch, name="progress", daemon=True)
    watcher.start()
    try:
        container.job_runtime.execute(job.id, None, "cli")
    finally:
        stop.set()
        watcher.join(timeout=5)
        signal.signal(signal.SIGINT, previous)
        if sys.stderr.isatty():
            typer.echo("", err=True)
    with container.session_factory() as session:
        done = session.get(JobRow, job.id)
        assert done is not None
        return done


def _import_line(job: Job) -> str:
    m = job.metrics or {}
    return (f"{m.get('seen', 0)}/{m.get('total', '?')} files: {m.get('imported', 0)} "
            f"imported, {m.get('skipped', 0)} skipped")


def _caption_line(job: Job) -> str:
    m = job.metrics or {}
    eta = f", about {job.eta_s:.0f} s left" if job.eta_s else ""
    return (f"{m.get('done', 0)}/{m.get('total', '?')} photos: {m.get('captioned', 0)} "
            f"captioned, {m.get('failed_count', 0)} failed{eta}")


def _finish(job: Job, as_json: bool, summary: str, details: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps({"job_id": job.id, "state": job.state, **(job.result or {})},
                              indent=2, ensure_ascii=False))
    else:
        typer.echo(summary)
        for line in details:
            typer.echo(f"  {line}")
    if job.state == "cancelled":
        typer.secho("cancelled: run the same command again to go on", err=True,
                    fg=typer.colors.YELLOW)
        raise typer.Exit(code=1)
    if job.state != "succeeded":
        fail(f"job {job.id} {job.state}: {job.error or 'see its log'}")


@library_app.command("import")
def library_import(
    folder: Annotated[
        Path, typer.Argument(help="The folder to import (with its sub-folders).",
                             exists=True, file_okay=False)
    ],
    user: Annotated[str, typer.Option("--user", "-u", help="Whose library.")],
    allow_training: Annotated[
        bool | None,
        typer.Option("--allow-training/--no-allow-training",
                     help="Let these photos' accepted captions become training data "
                          "(default: the user's setting)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import FOLDER into a user's library: every image under it, each sub-folder an album;
    duplicates, non-images and links are skipped and reported."""
    from app.services.job_kinds import JobKind

    with open_container() as container:
        with container.session_factory() as session:
            owner = user_named(session, user)
            params = container.library_imports.folder_params(owner, folder, allow_training)
            job = container.jobs.create_unsent(session, JobKind.LIBRARY_IMPORT, params, owner)
        done = _run_here(container, owner, job, _import_line)
    result: dict[str, Any] = done.result or {}
    skipped = result.get("skipped", [])
    _finish(done, as_json,
            f"{result.get('imported', 0)} photo(s) imported, "
            f"{result.get('skipped_count', len(skipped))} skipped (job {done.id})",
            [f"{s['path']}: {s['reason']} ({s['detail']})" for s in skipped])


@library_app.command("caption")
def library_caption(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose library.")],
    album: Annotated[
        str | None, typer.Option(help="Only this album (and its sub-albums).")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Only photos without a caption.")] = False,
    version: Annotated[
        int | None,
        typer.Option(help="Re-caption what this (active) version did not caption."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Caption a user's library with the active model version (in this process)."""
    from app.model_services import ModelLoading
    from app.services.library_captions import CaptionSelection

    with open_container(ModelLoading.ALL) as container:
        with container.session_factory() as session:
            owner = user_named(session, user)
            job = container.library_captions.create_unsent(
                session, owner, CaptionSelection(album, new, version))
        done = _run_here(container, owner, job, _caption_line)
    result: dict[str, Any] = done.result or {}
    failed = result.get("failed", [])
    _finish(done, as_json,
            f"{result.get('captioned', 0)} photo(s) captioned, {len(failed)} failed "
            f"(job {done.id})",
            [f"{f['name'] or f['photo_id']}: {f['error']}" for f in failed])


def _discover_line(job: Job) -> str:
    m = job.metrics or {}
    eta = f", about {job.eta_s:.0f} s left" if job.eta_s else ""
    return (f"{m.get('embedded', 0)} of {m.get('photos', '?')} photos embedded, "
            f"{m.get('failed_count', 0)} failed{eta}")


@library_app.command("discover")
def library_discover(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose library.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Look for subjects that recur in a user's photos but are none of their concepts (in this
    process) and print the suggestions; accept or dismiss them on the library page or with
    POST /api/library/suggestions/{id}/accept|dismiss."""
    from app.model_services import ModelLoading

    with open_container(ModelLoading.RETRIEVAL) as container:
        with container.session_factory() as session:
            owner = user_named(session, user)
            job = container.library_discovery.create_unsent(session, owner)
        done = _run_here(container, owner, job, _discover_line)
        with container.session_factory() as session:
            suggestions = container.library_discovery.list(session, owner)
            lines = [
                f"suggestion {s.id}: {len(s.photos)} photos of something unnamed: "
                + ", ".join(f"{p.photo.album + '/' if p.photo.album else ''}"
                            f"{p.photo.original_filename}" for p in s.photos[:8])
                + (", ..." if len(s.photos) > 8 else "")
                for s in suggestions
            ]
    result: dict[str, Any] = done.result or {}
    _finish(done, as_json,
            f"{len(lines)} open suggestion(s), {result.get('new', 0)} new; "
            f"{result.get('known', 0)} of {result.get('crops', 0)} crops show a concept "
            f"already named (job {done.id})",
            lines)


# Exports and XMP sidecars (app/cli/library_export.py).
library_app.command("export")(export_cmd)
library_app.command("xmp")(xmp_cmd)
