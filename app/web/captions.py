"""The caption page: upload or drop a photo, pin concepts, see the caption and its history."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.api.deps import ContainerDep, SessionDep
from app.web.common import PageUser, render

router = APIRouter(include_in_schema=False)


@router.get("/caption", response_class=HTMLResponse)
def caption_page(
    request: Request, user: PageUser, session: SessionDep, container: ContainerDep
) -> Response:
    concepts, _ = container.concepts.list(session, user, limit=500)
    service = container.models.loaded_captions()
    history = service.list(session, user, 0, 20)[0] if service else []
    return render(
        request,
        "captions/page.html",
        user=user,
        concepts=concepts,
        history=history,
        max_demonstrations=container.settings.caption.max_demonstrations,
    )
