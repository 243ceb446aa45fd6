"""Shared-concept pages: the owner shares and revokes on their concept's page; the invitee
sees a shared concept read-only and may leave it. Each handler calls one service, then
redirects or renders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import SessionDep, SharesDep
from app.errors import ConceptNotFound, DomainError
from app.web.common import CsrfChecked, PageUser, flash, render

router = APIRouter(include_in_schema=False)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.post("/concepts/{concept_id}/shares", dependencies=[CsrfChecked])
def share_concept(
    concept_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    shares: SharesDep,
    username: Annotated[str, Form()] = "",
) -> Response:
    try:
        share = shares.share(session, user, concept_id, username)
    except ConceptNotFound:
        raise  # not the caller's concept: the 404 page
    except DomainError as exc:  # no such account, already shared ...: said on the page
        flash(request, exc.detail, "error")
        return _redirect(f"/concepts/{concept_id}#shares")
    flash(request, f"Shared with {share.invitee.username}: read-only for them.")
    return _redirect(f"/concepts/{concept_id}#shares")


@router.post("/concepts/{concept_id}/shares/{share_id}/revoke", dependencies=[CsrfChecked])
def revoke_share(
    concept_id: int,
    share_id: int,
    request: Request,
    user: PageUser,
    session: SessionDep,
    shares: SharesDep,
) -> Response:
    shares.revoke(session, user, concept_id, share_id)
    flash(request, "Share revoked: it has left their retrieval and captions.")
    return _redirect(f"/concepts/{concept_id}#shares")


@router.get("/shared-concepts/{concept_id}", response_class=HTMLResponse)
def shared_concept_page(
    concept_id: int, request: Request, user: PageUser, session: SessionDep, shares: SharesDep
) -> Response:
    shared, concept = shares.get_shared(session, user, concept_id)
    return render(request, "concepts/shared.html", user=user, shared=shared, concept=concept)


@router.post("/shared-concepts/{concept_id}/leave", dependencies=[CsrfChecked])
def leave_shared_concept(
    concept_id: int, request: Request, user: PageUser, session: SessionDep, shares: SharesDep
) -> Response:
    shared, _ = shares.get_shared(session, user, concept_id)
    shares.leave(session, user, concept_id)
    flash(request, f"<{shared.name}> of {shared.owner_name} is no longer shared with you.")
    return _redirect("/concepts")
