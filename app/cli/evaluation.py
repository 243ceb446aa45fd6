"""``repic eval``: the grounding metric of a result file, RAP/RePIC import/export, runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import fail, open_container, user_named

eval_app = typer.Typer(
    help="Evaluation: grounding metrics, RAP/RePIC import/export, runs.", no_args_is_help=True
)


@eval_app.command("grounding")
def eval_grounding(
    results: Annotated[
        Path, typer.Argument(help="JSON list of [image, [names], caption, q] (or .jsonl).")
    ],
    case_sensitive: Annotated[
        bool,
        typer.Option("--case-sensitive", help="Compare names case-sensitively (paper: 2-concept)."),
    ] = False,
    mode: Annotated[str, typer.Option(help="paper (the paper's quirks) or strict.")] = "paper",
) -> None:
    """Personal-grounding precision/recall/F1 of a result file, as JSON."""
    from trainer.evaluate import MODES, ResultsFormatError, grounding_cli

    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}")
    try:
        summary = grounding_cli(results, case_sensitive=case_sensitive, mode=mode)
    except (OSError, ResultsFormatError) as exc:
        fail(f"error: {exc}")
    typer.echo(json.dumps(summary, indent=2))


@eval_app.command("import-db")
def eval_import_db(
    database: Annotated[Path, typer.Argument(help="RAP/RePIC database JSON.")],
    user: Annotated[str, typer.Option(help="Whose concepts they become.")],
    root: Annotated[
        Path | None,
        typer.Option(
            help="Folder the image paths are relative to (default: found from the file's "
            "folder and the ones above it, then by file name, as RePIC ships them)."
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(help="Add photos to existing concepts of the same name instead of refusing."),
    ] = False,
) -> None:
    """Import a RAP/RePIC concept database as a user's concepts (all or nothing).

    The keys become the concept names (``<ironman>`` -> ``ironman``, even when the database
    names it "Iron Man"): captions must contain the key, and the metric scores it."""
    from app.model_services import ModelLoading
    from app.services.rap_format import import_database

    # Retrieval loaded: embeddings and the index follow the photos.
    with open_container(ModelLoading.RETRIEVAL) as container:
        with container.session_factory() as session:
            owner = user_named(session, user)
            report = import_database(
                session,
                container.concepts,
                owner,
                database,
                root,
                on_conflict="merge" if merge else "error",
            )
        typer.echo(json.dumps(report.to_dict(), indent=2))


@eval_app.command("import-queries")
def eval_import_queries(
    queries: Annotated[
        Path, typer.Argument(help="JSON {image_path: [keys]} or {image_path: [[keys], ...]}.")
    ],
    user: Annotated[str, typer.Option(help="Owner of the set (and of the concepts named).")],
    name: Annotated[str, typer.Option(help="Name of the new evaluation set.")],
    root: Annotated[
        Path | None,
        typer.Option(help="Folder the image paths are relative to (default: found as import-db)."),
    ] = None,
    case_sensitive: Annotated[
        bool | None,
        typer.Option(
            "--case-sensitive/--ignore-case",
            help="Score names case-sensitively or not (default: case-sensitive when every "
            "query names two concepts, as the paper scores its 2-concept set).",
        ),
    ] = None,
) -> None:
    """Import a query set as an evaluation set (photos copied into the image store); a group
    photo asked about several concept subsets becomes one query per subset."""
    from app.services.rap_format import ImportLimits, import_queries

    with open_container() as container, container.session_factory() as session:
        storage = container.settings.storage
        owner = user_named(session, user)
        row = import_queries(
            session,
            container.store,
            owner,
            queries,
            root,
            name,
            case_sensitive,
            ImportLimits(storage.max_upload_bytes, storage.max_image_pixels),
        )
        typer.echo(
            json.dumps(
                {
                    "id": row.id,
                    "name": row.name,
                    "queries": len(row.queries),
                    "case_sensitive": row.case_sensitive,
                }
            )
        )


@eval_app.command("export-db")
def eval_export_db(
    out: Annotated[Path, typer.Argument(help="Database JSON to write (photos go beside it).")],
    user: Annotated[str, typer.Option(help="Whose concepts to export.")],
) -> None:
    """Export a user's concepts in the RAP/RePIC database format."""
    from app.services.rap_format import export_database

    with open_container() as container, container.session_factory() as session:
        owner = user_named(session, user)
        typer.echo(json.dumps(export_database(session, container.store, owner, out)))


@eval_app.command("run")
def eval_run(
    version: Annotated[int, typer.Option(help="Model version id.")],
    set_name: Annotated[str, typer.Option("--set", help="Evaluation set name (or id).")],
    setting: Annotated[str, typer.Option(help="skip, retrieval or wrong.")] = "skip",
    k: Annotated[int | None, typer.Option(help="Retrieval K (default 2 or 4).")] = None,
    user: Annotated[
        str | None,
        typer.Option(help="Owner of the set, when several users have a set of that name."),
    ] = None,
) -> None:
    """Evaluate a model version on a set in this process and print the metrics."""
    from sqlalchemy import select

    from app.model_services import ModelLoading
    from app.models import EvaluationSet

    with open_container(ModelLoading.ALL) as container:
        with container.session_factory() as session:
            query = select(EvaluationSet)
            if set_name.isdigit():
                query = query.where(EvaluationSet.id == int(set_name))
            else:
                query = query.where(EvaluationSet.name == set_name)
            if user is not None:
                query = query.where(EvaluationSet.owner_id == user_named(session, user).id)
            found = list(session.scalars(query))
        if len(found) != 1:
            fail(
                f"{len(found)} evaluation sets match {set_name!r}"
                + ("; name the owner with --user" if found else "")
            )

        def progress(done: int, total: int) -> None:
            typer.echo(f"\rcaptioned {done}/{total}", nl=False, err=True)

        row = container.evaluations.run(
            version, found[0].id, {"setting": setting, "k": k}, progress
        )
        typer.echo("", err=True)
        typer.echo(
            json.dumps({"evaluation_id": row.id, "state": row.state, **row.metrics}, indent=2)
        )
