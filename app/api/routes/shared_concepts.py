"""Concepts other accounts shared with the caller: read-only (list, read, photos) and leavable.

There is no write here but leaving: changing a shared concept stays with its owner, whose
routes (``/api/concepts``) answer 404 to anyone else.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import FileResponse, Response

from app.api.deps import ContainerDep, CurrentUser, SessionDep, SharesDep
from app.api.params import PathId
from app.api.routes.concepts import MEDIA_TYPES
from app.api.schemas import SharedConceptPublic, SharedConceptsPublic
from app.api.serializers import shared_concept_public

router = APIRouter(prefix="/shared-concepts", tags=["shared concepts"])


@router.get("", response_model=SharedConceptsPublic)
def list_shared_concepts(
    user: CurrentUser, session: SessionDep, shares: SharesDep
) -> SharedConceptsPublic:
    rows = shares.shared_with(session, user)
    return SharedConceptsPublic(
        data=[shared_concept_public(s, c) for s, c in rows], count=len(rows)
    )


@router.get("/{concept_id}", response_model=SharedConceptPublic)
def get_shared_concept(
    concept_id: PathId, user: CurrentUser, session: SessionDep, shares: SharesDep
) -> SharedConceptPublic:
    return shared_concept_public(*shares.get_shared(session, user, concept_id))


@router.delete("/{concept_id}", status_code=status.HTTP_204_NO_CONTENT)
def leave_shared_concept(
    concept_id: PathId, user: CurrentUser, session: SessionDep, shares: SharesDep
) -> Response:
    """Give a shared concept back: it leaves your retrieval and captions at once (its owner
    keeps it)."""
    shares.leave(session, user, concept_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{concept_id}/images/{image_id}", response_class=FileResponse)
def get_shared_image(
    concept_id: PathId,
    image_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    shares: SharesDep,
    container: ContainerDep,
) -> FileResponse:
    row = shares.shared_image(session, user, concept_id, image_id)
    return FileResponse(
        container.store.absolute(row.path),
        media_type=MEDIA_TYPES.get(row.format),
        # private + no-store: a revoked share must not be read back from a cache.
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/{concept_id}/images/{image_id}/thumbnail", response_class=FileResponse)
def get_shared_thumbnail(
    concept_id: PathId,
    image_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    shares: SharesDep,
    container: ContainerDep,
) -> FileResponse:
    row = shares.shared_image(session, user, concept_id, image_id)
    path = container.store.thumbnail(row.path, container.settings.storage.thumbnail_size)
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"}
    )
