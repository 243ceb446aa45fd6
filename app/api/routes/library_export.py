"""``GET /api/library/export``: the caller's library photos (an album, or any search of the
library) as a zip of photos with their XMP (streamed), or their captions as JSON or CSV."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from app.api.deps import CurrentUser, LibraryExportsDep, SessionDep
from app.api.params import Text
from app.services.library_export import (
    MEDIA_TYPES,
    ExportFormat,
    csv_export,
    export_name,
    json_export,
    select_photos,
)
from app.services.library_search import ConceptMode, PhotoQuery
from app.services.xmp import SidecarNaming, XmpMode

router = APIRouter(prefix="/library", tags=["library"])


def export_query(
    album: Annotated[Text | None, Query(max_length=1024, description=(
        "An album (the folder it was imported from), with the albums inside it."))] = None,
    concept: Annotated[list[Text] | None, Query(max_length=20, description=(
        "Photos with these concepts (`bo` or `<bo>`), combined by `concept_mode`."))] = None,
    concept_mode: ConceptMode = ConceptMode.ALL,
    not_concept: Annotated[list[Text] | None, Query(max_length=20, description=(
        "Photos with none of these concepts."))] = None,
    q: Annotated[Text | None, Query(max_length=500, description="Words of the captions.")] = None,
    captured_from: Annotated[dt.date | None, Query(alias="from")] = None,
    captured_to: Annotated[dt.date | None, Query(alias="to")] = None,
    captioned: Annotated[bool | None, Query(description=(
        "true: captioned photos only; false: not yet"))] = None,
) -> PhotoQuery:
    """The filters of ``GET /api/library/photos``, under the same names."""
    return PhotoQuery(
        concepts=tuple(concept or ()),
        concept_mode=concept_mode,
        not_concepts=tuple(not_concept or ()),
        text=q,
        album=album,
        captured_from=captured_from,
        captured_to=captured_to,
        captioned=captioned,
    )


@router.get(
    "/export",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPES[f].split(";")[0]: {} for f in ExportFormat},
                     "description": "The export, as an attachment."}},
)
def export_library(
    user: CurrentUser,
    session: SessionDep,
    exports: LibraryExportsDep,
    query: Annotated[PhotoQuery, Depends(export_query)],
    format: ExportFormat = ExportFormat.ZIP,  # noqa: A002 (the parameter's public name)
    xmp: Annotated[XmpMode, Query(description=(
        "zip: `sidecar` (an .xmp beside each photo) or `embedded` (in the copies)."))]
    = XmpMode.SIDECAR,
    naming: Annotated[SidecarNaming, Query(description=(
        "Sidecar names: `appended` (IMG_1.jpg.xmp) or `replaced` (IMG_1.xmp)."))]
    = SidecarNaming.APPENDED,
) -> Response:
    """Export the photos that match the filters (all the library without one).

    The zip holds each photo under its album's folder with its XMP sidecar (or embedded
    metadata) and ``repic-export.json``; it is streamed while it is made. Without exiftool on
    the server the zip is a 503 saying what to install; JSON and CSV need no exiftool.
    """
    photos = select_photos(session, user, query)
    session.commit()  # no connection is held while the files stream
    headers = {
        "Content-Disposition": f'attachment; filename="{export_name(query.album, format)}"'
    }
    if format == ExportFormat.ZIP:
        exports.check_exiftool()
        return StreamingResponse(
            exports.zip_stream(photos, xmp, naming), media_type=MEDIA_TYPES[format],
            headers=headers,
        )
    body = json_export(photos) if format == ExportFormat.JSON else csv_export(photos)
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
