"""Read multipart files into memory with a size cap, before any validation or write; and
what each upload parameter carries (:class:`UploadKind`), from which its route's body limit
follows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.params import NUL_MESSAGE
from app.errors import InvalidInput, PayloadTooLarge
from app.services.concepts import Upload
from app.services.training import MAX_DATASET_BYTES
from app.settings import StorageSettings
from app.storage import ValidImage, validate_image


class UploadKind(Enum):
    """What one ``File()`` parameter carries, written next to it in its ``Annotated``
    (``Annotated[list[UploadFile], File(), UploadKind.PHOTOS]``).

    :mod:`app.api.limits` reads it from the matched route: the route's body may weigh
    ``storage.max_body_bytes`` plus :meth:`max_bytes` of each of its file parameters, and it
    is read only once the caller is known.
    """

    PHOTO = "photo"  # one photo
    PHOTOS = "photos"  # up to storage.max_files_per_upload photos
    PHOTO_BATCH = "photo_batch"  # up to storage.max_files_per_batch photos
    DATASET = "dataset"  # one training dataset file

    def max_bytes(self, storage: StorageSettings) -> int:
        match self:
            case UploadKind.PHOTO:
                return storage.max_upload_bytes
            case UploadKind.PHOTOS:
                return storage.max_files_per_upload * storage.max_upload_bytes
            case UploadKind.PHOTO_BATCH:
                return storage.max_files_per_batch * storage.max_upload_bytes
            case UploadKind.DATASET:
                return MAX_DATASET_BYTES


def file_name(upload: UploadFile) -> str | None:
    """The client's name for ``upload``; one with a NUL is refused (no path or row holds it)."""
    if upload.filename and "\x00" in upload.filename:
        raise InvalidInput(f"A file name {NUL_MESSAGE}")
    return upload.filename


async def read_uploads(files: Sequence[UploadFile], max_bytes: int) -> list[Upload]:
    uploads = []
    for f in files:
        name = file_name(f)
        data = await f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{name or 'upload'}: more than the limit of {max_bytes} bytes")
        uploads.append(Upload(data=data, filename=name, content_type=f.content_type))
    return uploads


async def read_valid_images(
    files: Sequence[UploadFile],
    storage: StorageSettings,
    decode_scale_for: Callable[[int, int], int] | None = None,
) -> list[ValidImage]:
    """Read and validate query photos (all of them before anything is done with any);
    ``decode_scale_for``: see :func:`~app.storage.validate_image`."""
    uploads = await read_uploads(files, storage.max_upload_bytes)

    def validate_all() -> list[ValidImage]:
        return [
            validate_image(
                u.data,
                u.filename,
                u.content_type,
                max_bytes=storage.max_upload_bytes,
                max_pixels=storage.max_image_pixels,
                decode_scale_for=decode_scale_for,
            )
            for u in uploads
        ]

    # Decoding is CPU work: off the event loop, so other requests go on meanwhile.
    return await run_in_threadpool(validate_all)
