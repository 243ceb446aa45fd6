"""``repic library export`` and ``repic library xmp``: a user's library photos as a zip (photos
+ XMP), JSON or CSV file, and XMP sidecars written next to the originals of a folder import."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.context import expected_errors, fail, open_container, user_named

if TYPE_CHECKING:
    from app.services.library_search import PhotoQuery


def _query(
    album: str | None,
    concept: list[str] | None,
    text: str | None,
    captured_from: dt.datetime | None,
    captured_to: dt.datetime | None,
) -> PhotoQuery:
    from app.services.library_search import PhotoQuery

    return PhotoQuery(
        concepts=tuple(concept or ()),
        text=text,
        album=album,
        captured_from=captured_from.date() if captured_from else None,
        captured_to=captured_to.date() if captured_to else None,
    )


UserOption = Annotated[str, typer.Option("--user", "-u", help="Whose library.")]
AlbumOption = Annotated[
    str | None,
    typer.Option("--album", "-a", help="An album (the folder it was imported from), with the "
                 "albums inside it. Default: the whole library."),
]
ConceptOption = Annotated[
    list[str] | None,
    typer.Option("--concept", "-c", help="Only photos with this concept (repeatable: all)."),
]
TextOption = Annotated[str | None, typer.Option("--text", "-q", help="Words of the captions.")]
FromOption = Annotated[
    dt.datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="Captured on or after.")
]
ToOption = Annotated[
    dt.datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Captured on or before.")
]
NamingOption = Annotated[
    str,
    typer.Option("--naming", help="Sidecar names: 'appended' (IMG_1.jpg.xmp: darktable, "
                 "digiKam, Immich) or 'replaced' (IMG_1.xmp: Lightroom)."),
]


def export_cmd(
    user: UserOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.", dir_okay=False)],
    album: AlbumOption = None,
    concept: ConceptOption = None,
    text: TextOption = None,
    captured_from: FromOption = None,
    captured_to: ToOption = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="zip, json or csv (default: OUT's extension)."),
    ] = None,
    xmp: Annotated[
        str, typer.Option(help="zip only: 'sidecar' (an .xmp beside each photo) or 'embedded' "
                          "(in the copies; the stored photos are never changed).")
    ] = "sidecar",
    naming: NamingOption = "appended",
) -> None:
    """Export library photos: a zip of photos with their XMP, or their captions as JSON/CSV."""
    from app.services.library_export import ExportFormat, csv_export, json_export, select_photos
    from app.services.xmp import check_mode

    chosen = (fmt or out.suffix.lstrip(".")).lower()
    if chosen not in set(ExportFormat):
        fail(f"--format must be one of {', '.join(ExportFormat)} (or OUT must end so)")
    export_format = ExportFormat(chosen)
    with open_container() as container, expected_errors():
        mode, sidecar_naming = check_mode(xmp, naming)
        service = container.library_exports
        with container.session_factory() as session:
            owner = user_named(session, user)
            photos = select_photos(
                session, owner, _query(album, concept, text, captured_from, captured_to)
            )
        if export_format == ExportFormat.ZIP:
            service.check_exiftool()
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written beside OUT and renamed at the end: a failed export leaves no half a file.
        fd, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                if export_format == ExportFormat.ZIP:
                    for chunk in service.zip_stream(photos, mode, sidecar_naming):
                        fh.write(chunk)
                elif export_format == ExportFormat.JSON:
                    fh.write(json_export(photos))
                else:
                    fh.write(csv_export(photos))
            os.replace(temp, out)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    typer.echo(f"{len(photos)} photos exported to {out}")


def xmp_cmd(
    user: UserOption,
    album: AlbumOption = None,
    concept: ConceptOption = None,
    text: TextOption = None,
    captured_from: FromOption = None,
    captured_to: ToOption = None,
    naming: NamingOption = "appended",
) -> None:
    """Write XMP sidecars next to the originals that `repic library import` read.

    An existing sidecar (digiKam's, darktable's) is updated, its other keywords and regions
    kept; the originals themselves are never written.
    """
    from app.services.library_export import select_photos
    from app.services.xmp import check_mode

    with open_container() as container, expected_errors():
        _, sidecar_naming = check_mode("sidecar", naming)
        with container.session_factory() as session:
            owner = user_named(session, user)
            photos = select_photos(
                session, owner, _query(album, concept, text, captured_from, captured_to)
            )
        results = container.library_exports.write_sidecars(photos, sidecar_naming)
    written = [r for r in results if r.sidecar]
    for result in results:
        if result.skipped:
            typer.echo(f"skipped photo {result.photo_id}: {result.skipped}", err=True)
    typer.echo(f"{len(written)} sidecars written, {len(results) - len(written)} skipped")
