"""The caption page: upload or drop a photo, pin concepts, see the caption and its history
(newest first, in pages)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import ContainerDep, SessionDep
from app.api.params import MAX_SKIP
from app.web.common import PageUser, render

router = APIRouter(include_in_schema=False)


#: Captions per page of the history.
HISTORY_PAGE = 20


@router.get("/caption", response_class=HTMLResponse)
def caption_page(
    request: Request,
    user: PageUser,
    session: SessionDep,
    container: ContainerDep,
    page: Annotated[int, Query(ge=1, le=MAX_SKIP // HISTORY_PAGE)] = 1,
) -> Response:
    concepts, _ = container.concepts.list(session, user, limit=500)
    shared = container.shares.shared_with(session, user)
    service = container.models.loaded_captions()
    history, count = (
        service.list(session, user, (page - 1) * HISTORY_PAGE, HISTORY_PAGE) if service else ([], 0)
    )
    return render(
        request,
        "captions/page.html",
        user=user,
        concepts=concepts,
        shared=shared,
        history=history,
        history_count=count,
        page=page,
        pages=max(1, -(-count // HISTORY_PAGE)),
        max_demonstrations=container.settings.caption.max_demonstrations,
    )
