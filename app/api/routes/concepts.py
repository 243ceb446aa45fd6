"""Concepts and their photos, scoped to the caller (another user's concept is a 404)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContainerDep, CurrentUser, SessionDep, SharesDep
from app.api.params import PathId, Skip, Text
from app.api.schemas import (
    ConceptPublic,
    ConceptsPublic,
    ConceptUpdate,
    ImagePublic,
    ImagesPublic,
    ImageUpdate,
    ShareCreate,
    SharePublic,
    SharesPublic,
)
from app.api.serializers import concept_public, image_public, share_public
from app.api.uploads import UploadKind, read_uploads

router = APIRouter(prefix="/concepts", tags=["concepts"])

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@router.get("", response_model=ConceptsPublic)
def list_concepts(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ConceptsPublic:
    rows, count = container.concepts.list(session, user, skip=skip, limit=limit)
    return ConceptsPublic(data=[concept_public(c) for c in rows], count=count)


@router.post("", response_model=ConceptPublic, status_code=status.HTTP_201_CREATED)
async def create_concept(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    name: Annotated[Text, Form()],
    images: Annotated[
        list[UploadFile],
        File(description="One or more JPEG/PNG/WebP photos"),
        UploadKind.PHOTOS,
    ],
    description: Annotated[Text, Form()] = "",
    category: Annotated[Text, Form()] = "",
    use_for_training: Annotated[bool, Form()] = False,
) -> ConceptPublic:
    uploads = await read_uploads(images, container.settings.storage.max_upload_bytes)

    concept = await run_in_threadpool(
        container.concepts.create,
        session,
        user,
        name=name,
        description=description,
        category=category,
        use_for_training=use_for_training,
        uploads=uploads,
    )
    return concept_public(concept)


@router.get("/{concept_id}", response_model=ConceptPublic)
def get_concept(
    concept_id: PathId, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> ConceptPublic:
    return concept_public(container.concepts.get(session, user, concept_id))


@router.patch("/{concept_id}", response_model=ConceptPublic)
def update_concept(
    concept_id: PathId,
    body: ConceptUpdate,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> ConceptPublic:
    concept = container.concepts.update(
        session, user, concept_id, **body.model_dump(exclude_unset=True)
    )
    return concept_public(concept)


@router.delete("/{concept_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_concept(
    concept_id: PathId, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> Response:
    container.concepts.delete(session, user, concept_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{concept_id}/images", response_model=ImagesPublic, status_code=status.HTTP_201_CREATED
)
async def add_images(
    concept_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    images: Annotated[
        list[UploadFile],
        File(description="One or more JPEG/PNG/WebP photos"),
        UploadKind.PHOTOS,
    ],
) -> ImagesPublic:
    uploads = await read_uploads(images, container.settings.storage.max_upload_bytes)

    rows = await run_in_threadpool(
        container.concepts.add_images, session, user, concept_id, uploads
    )
    return ImagesPublic(data=[image_public(r) for r in rows], count=len(rows))


@router.patch("/{concept_id}/images/{image_id}", response_model=ImagePublic)
def update_image(
    concept_id: PathId,
    image_id: PathId,
    body: ImageUpdate,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> ImagePublic:
    row = container.concepts.set_image_flags(
        session, user, concept_id, image_id, **body.model_dump(exclude_unset=True)
    )
    return image_public(row)


@router.delete("/{concept_id}/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_image(
    concept_id: PathId,
    image_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> Response:
    container.concepts.delete_image(session, user, concept_id, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{concept_id}/images/{image_id}", response_class=FileResponse)
def get_image_file(
    concept_id: PathId,
    image_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> FileResponse:
    row = container.concepts.get_image(session, user, concept_id, image_id)
    return FileResponse(
        container.store.absolute(row.path),
        media_type=MEDIA_TYPES.get(row.format),
        headers={"Cache-Control": "private, max-age=86400"},
    )


@router.get("/{concept_id}/images/{image_id}/thumbnail", response_class=FileResponse)
def get_image_thumbnail(
    concept_id: PathId,
    image_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
) -> FileResponse:
    row = container.concepts.get_image(session, user, concept_id, image_id)
    path = container.store.thumbnail(row.path, container.settings.storage.thumbnail_size)
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


# -- sharing with other accounts (the owner's side; the invitee's is /api/shared-concepts) ---


@router.get("/{concept_id}/shares", response_model=SharesPublic)
def list_shares(
    concept_id: PathId, user: CurrentUser, session: SessionDep, shares: SharesDep
) -> SharesPublic:
    """The accounts this concept of yours is shared with."""
    rows = shares.shares_of(session, user, concept_id)
    return SharesPublic(data=[share_public(r) for r in rows], count=len(rows))


@router.post(
    "/{concept_id}/shares", response_model=SharePublic, status_code=status.HTTP_201_CREATED
)
def share_concept(
    concept_id: PathId,
    body: ShareCreate,
    user: CurrentUser,
    session: SessionDep,
    shares: SharesDep,
) -> SharePublic:
    """Share this concept read-only with another account (by user name): their retrieval and
    captions may use it until you revoke the share or they leave it."""
    return share_public(shares.share(session, user, concept_id, body.username))


@router.delete("/{concept_id}/shares/{share_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_share(
    concept_id: PathId,
    share_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    shares: SharesDep,
) -> Response:
    """End a share: the concept leaves that account's retrieval and captions at once."""
    shares.revoke(session, user, concept_id, share_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
