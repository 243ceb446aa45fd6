"""The personal photo library: import photos (a job), caption them (a job), find them by
concept, caption words, album and date, look at one, delete one, add one to a concept."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    ContainerDep,
    CurrentUser,
    LibraryCaptionsDep,
    LibraryDep,
    LibraryImportsDep,
    SessionDep,
)
from app.api.params import BodyId, PathId, Text
from app.api.routes.jobs import JobPublic, job_public
from app.api.schemas import ImagePublic
from app.api.serializers import image_public
from app.api.uploads import UploadKind, file_name
from app.errors import InvalidInput
from app.logging_setup import request_id_var
from app.models import LibraryPhoto
from app.services.library import Album
from app.services.library_captions import CaptionSelection
from app.services.library_import import UploadedFile
from app.services.library_search import ConceptMode, PhotoQuery

router = APIRouter(prefix="/library", tags=["library"])

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
#: Long side of the grid's thumbnails, pixels (larger than concept thumbnails: a photo grid).
GRID_THUMBNAIL = 384


class FoundConceptPublic(BaseModel):
    #: None when the concept was deleted since (its name stays).
    id: int | None
    name: str
    score: float | None
    #: [x1, y1, x2, y2] in the photo's pixels.
    box: list[int] | None
    pinned: bool


class LibraryPhotoPublic(BaseModel):
    id: int
    original_filename: str
    album: str
    captured_at: dt.datetime | None
    imported_at: dt.datetime
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    allow_training: bool
    #: The latest caption (the owner's edit when they made one); "" before the first.
    caption: str
    #: Give feedback on it with PATCH /api/captions/{caption_id}.
    caption_id: int | None
    model_version_id: int | None
    captioned_at: dt.datetime | None
    concepts: list[FoundConceptPublic]
    image_url: str
    thumbnail_url: str


class LibraryPhotosPublic(BaseModel):
    data: list[LibraryPhotoPublic]
    count: int
    page: int
    page_size: int
    pages: int


class AlbumPublic(BaseModel):
    #: "" for the photos at the top of an imported folder.
    name: str
    photos: int
    captioned: int
    cover_url: str


class AlbumsPublic(BaseModel):
    data: list[AlbumPublic]
    count: int


class CaptionJobCreate(BaseModel):
    """Which photos to caption: all of them, an album (and its sub-albums), only those without
    a caption, those not captioned by ``version_id`` (the active version), or the photos
    ``photo_ids`` (every filter given must hold)."""

    model_config = ConfigDict(extra="forbid")
    album: Text | None = None
    only_uncaptioned: bool = False
    version_id: BodyId | None = None
    #: Only these photos of yours.
    photo_ids: list[BodyId] | None = Field(None, max_length=10_000)


class AddToConcept(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concept_id: BodyId


class LibraryPhotoUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_training: bool


def photo_public(photo: LibraryPhoto) -> LibraryPhotoPublic:
    base = f"/api/library/photos/{photo.id}"
    return LibraryPhotoPublic(
        id=photo.id,
        original_filename=photo.original_filename,
        album=photo.album,
        captured_at=photo.captured_at,
        imported_at=photo.imported_at,
        width=photo.width,
        height=photo.height,
        format=photo.format,
        bytes=photo.bytes,
        sha256=photo.sha256,
        allow_training=photo.allow_training,
        caption=photo.caption_text,
        caption_id=photo.caption_id,
        model_version_id=photo.model_version_id,
        captioned_at=photo.captioned_at,
        concepts=[
            FoundConceptPublic(id=c.concept_id, name=c.name, score=c.score, box=c.box,
                               pinned=c.pinned)
            for c in photo.concepts
        ],
        image_url=f"{base}/image",
        thumbnail_url=f"{base}/thumbnail",
    )


def album_public(album: Album) -> AlbumPublic:
    return AlbumPublic(name=album.name, photos=album.photos, captioned=album.captioned,
                       cover_url=f"/api/library/photos/{album.cover_id}/thumbnail")


@router.post("/imports", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
async def create_import(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    imports: LibraryImportsDep,
    files: Annotated[
        list[UploadFile],
        File(description="The files to import (anything: each is judged by the job)"),
        UploadKind.PHOTO_BATCH,
    ],
    paths: Annotated[
        list[Text],
        Form(description="Each file's path in the folder it was dragged from "
                         "(webkitRelativePath), in the order of the files: its album"),
    ] = [],  # noqa: B006 - FastAPI reads the default, never mutates it
    allow_training: Annotated[
        bool | None,
        Form(description="Let these photos' accepted captions become training data "
                         "(default: your account's setting)"),
    ] = None,
) -> JobPublic:
    """Import photos into your library: a cpu-queue job, followed at ``/api/jobs/{id}``.

    At most ``REPIC_STORAGE__MAX_FILES_PER_BATCH`` files per request (send a big folder in
    parts). Nothing is refused here: the job reports each file it skipped and why (not an
    image, a duplicate of a photo in your library, unreadable, empty, too large).
    """
    imports.check_upload_count(len(files))
    if paths and len(paths) != len(files):
        raise InvalidInput(f"paths must give one path per file ({len(files)}), got {len(paths)}")
    limit = container.settings.storage.max_upload_bytes
    received: list[UploadedFile] = []
    for index, upload in enumerate(files):
        data = await upload.read(limit + 1)
        size = upload.size if upload.size is not None else len(data)
        received.append(UploadedFile(
            name=file_name(upload),
            relative_path=paths[index] if paths else None,
            data=data if len(data) <= limit else None,
            size=max(size, len(data)),
        ))
    job = await run_in_threadpool(
        imports.create_upload_import, session, user, received,
        allow_training=allow_training, request_id=request_id_var.get(),
    )
    return job_public(job)


@router.post("/caption-jobs", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
def create_caption_job(
    body: CaptionJobCreate, user: CurrentUser, session: SessionDep, captions: LibraryCaptionsDep
) -> JobPublic:
    """Caption your library (or an album, or new photos, or re-caption with the active version)
    in the background: progress and ETA at ``/api/jobs/{id}``. One at a time per library."""
    selection = CaptionSelection(
        body.album or None, body.only_uncaptioned, body.version_id,
        tuple(body.photo_ids) if body.photo_ids is not None else None,
    )
    return job_public(
        captions.create(session, user, selection, request_id=request_id_var.get())
    )


@router.get("/photos", response_model=LibraryPhotosPublic)
def search_photos(
    user: CurrentUser,
    session: SessionDep,
    library: LibraryDep,
    concept: Annotated[
        list[Text], Query(description="A concept found in the photo (repeatable)")
    ] = [],  # noqa: B006
    concept_mode: Annotated[
        ConceptMode, Query(description="all: every concept given; any: at least one")
    ] = ConceptMode.ALL,
    not_concept: Annotated[
        list[Text], Query(description="A concept the photo must not show (repeatable)")
    ] = [],  # noqa: B006
    q: Annotated[
        Text | None, Query(max_length=500, description="Words of the caption (all of them)")
    ] = None,
    album: Annotated[
        Text | None, Query(max_length=1024, description="An album and its sub-albums")
    ] = None,
    captured_from: Annotated[
        dt.date | None, Query(alias="from", description="Captured on or after (YYYY-MM-DD)")
    ] = None,
    captured_to: Annotated[
        dt.date | None, Query(alias="to", description="Captured on or before (YYYY-MM-DD)")
    ] = None,
    captioned: Annotated[
        bool | None, Query(description="true: captioned photos only; false: not yet")
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> LibraryPhotosPublic:
    """Your photos matching every filter given, newest capture first."""
    query = PhotoQuery(
        concepts=tuple(concept), concept_mode=concept_mode, not_concepts=tuple(not_concept),
        text=q, album=album or None, captured_from=captured_from, captured_to=captured_to,
        captioned=captioned,
    )
    rows, count = library.search(session, user, query, skip=(page - 1) * page_size,
                                 limit=page_size)
    return LibraryPhotosPublic(
        data=[photo_public(p) for p in rows], count=count, page=page, page_size=page_size,
        pages=max(1, math.ceil(count / page_size)),
    )


@router.get("/albums", response_model=AlbumsPublic)
def list_albums(user: CurrentUser, session: SessionDep, library: LibraryDep) -> AlbumsPublic:
    albums = library.albums(session, user)
    return AlbumsPublic(data=[album_public(a) for a in albums], count=len(albums))


@router.get("/photos/{photo_id}", response_model=LibraryPhotoPublic)
def get_photo(
    photo_id: PathId, user: CurrentUser, session: SessionDep, library: LibraryDep
) -> LibraryPhotoPublic:
    return photo_public(library.get(session, user, photo_id))


@router.patch("/photos/{photo_id}", response_model=LibraryPhotoPublic)
def update_photo(
    photo_id: PathId,
    body: LibraryPhotoUpdate,
    user: CurrentUser,
    session: SessionDep,
    library: LibraryDep,
) -> LibraryPhotoPublic:
    """Whether this photo's accepted captions may become training data."""
    return photo_public(library.set_allow_training(session, user, photo_id, body.allow_training))


@router.delete("/photos/{photo_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_photo(
    photo_id: PathId, user: CurrentUser, session: SessionDep, library: LibraryDep
) -> Response:
    """Delete the photo and its captions (a concept photo made from it stays)."""
    library.delete(session, user, photo_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/photos/{photo_id}/add-to-concept",
    response_model=ImagePublic,
    status_code=status.HTTP_201_CREATED,
)
def add_to_concept(
    photo_id: PathId,
    body: AddToConcept,
    user: CurrentUser,
    session: SessionDep,
    library: LibraryDep,
) -> ImagePublic:
    """Use this photo as a reference photo of one of your concepts (library photos never
    are otherwise)."""
    return image_public(library.add_to_concept(session, user, photo_id, body.concept_id))


@router.get("/photos/{photo_id}/image", response_class=FileResponse)
def photo_image(
    photo_id: PathId, user: CurrentUser, session: SessionDep, library: LibraryDep
) -> FileResponse:
    photo = library.get(session, user, photo_id)
    return FileResponse(
        library.image_path(session, user, photo_id),
        media_type=MEDIA_TYPES.get(photo.format),
        headers={"Cache-Control": "private, max-age=86400"},
    )


@router.get("/photos/{photo_id}/thumbnail", response_class=FileResponse)
def photo_thumbnail(
    photo_id: PathId, user: CurrentUser, session: SessionDep, library: LibraryDep
) -> FileResponse:
    return FileResponse(
        library.image_path(session, user, photo_id, size=GRID_THUMBNAIL),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400"},
    )
