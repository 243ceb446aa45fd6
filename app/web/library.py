"""The library page: import (drag a folder), caption buttons with live progress, the
suggestions of concept discovery ("You have N photos of something unnamed"), the search form
(concepts, caption words, album, dates) and the results as a photo grid, in pages."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import ContainerDep, SessionDep
from app.errors import DomainError, InvalidInput
from app.services.library_captions import CaptionSelection
from app.services.library_search import ConceptMode, PhotoQuery, concept_key
from app.services.versions import active_version
from app.web.common import PageUser, render

router = APIRouter(include_in_schema=False)

#: Photos per page of the grid.
GRID_PAGE = 48


def _date(value: str | None) -> dt.date | None:
    """A date field of the form (empty: no filter); a bad one is said on the page."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)") from None


@router.get("/library", response_class=HTMLResponse)
def library_page(
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    concept: Annotated[list[str], Query()] = [],  # noqa: B006 - read, never mutated
    concept_mode: Annotated[str, Query()] = "all",
    not_concept: Annotated[list[str], Query()] = [],  # noqa: B006
    q: Annotated[str, Query(max_length=500)] = "",
    album: Annotated[str, Query(max_length=1024)] = "",
    captured_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    captured_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    library = container.library
    form = {"concept": [concept_key(c) for c in concept], "concept_mode": concept_mode,
            "not_concept": [concept_key(c) for c in not_concept], "q": q, "album": album,
            "from": captured_from, "to": captured_to}
    error = None
    photos: list[Any] = []
    count = 0
    try:
        query = PhotoQuery(
            concepts=tuple(concept), not_concepts=tuple(not_concept),
            concept_mode=ConceptMode.ANY if concept_mode == "any" else ConceptMode.ALL,
            text=q or None, album=album or None,
            captured_from=_date(captured_from), captured_to=_date(captured_to),
        )
        photos, count = library.search(session, user, query, skip=(page - 1) * GRID_PAGE,
                                       limit=GRID_PAGE)
    except DomainError as exc:
        error = exc.detail
    total, captioned = library.count(session, user)
    version = active_version(session)
    outdated = (container.library_captions.count(session, user, CaptionSelection(
        version_id=version.id)) if version is not None and captioned else 0)
    concepts, _ = container.concepts.list(session, user, limit=500)
    found = library.concept_names(session, user)
    names = sorted({*(c.name for c in concepts), *found}, key=str.lower)
    active_jobs = [*container.library_imports.active(session, user)]
    caption_job = container.library_captions.running(session, user)
    if caption_job is not None:
        active_jobs.append(caption_job)
    discovery_job = container.library_discovery.running(session, user)
    if discovery_job is not None:
        active_jobs.append(discovery_job)
    filtered = any(v for k, v in form.items() if k != "concept_mode")
    return render(
        request,
        "library/page.html",
        status_code=422 if error else 200,
        user=user,
        error=error,
        photos=photos,
        count=count,
        total=total,
        captioned=captioned,
        uncaptioned=total - captioned,
        version=version,
        outdated=outdated,
        albums=library.albums(session, user),
        concept_names=names,
        concepts=concepts,
        form=form,
        filtered=filtered,
        page=page,
        pages=max(1, -(-count // GRID_PAGE)),
        query_string=_page_query(request),
        active_jobs=active_jobs,
        max_files=container.settings.storage.max_files_per_batch,
        max_bytes=container.settings.storage.max_upload_bytes,
        allow_training=bool(getattr(user, "allow_feedback_training", False)),
        exiftool_ready=container.library_exports.exiftool_ready(),
        suggestions=container.library_discovery.list(session, user),
        discovery_period_s=container.settings.library.discovery_period_s,
    )


def _page_query(request: Request) -> str:
    """The search's query string without its page (the pager adds its own)."""
    from urllib.parse import urlencode

    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    return urlencode(kept)
