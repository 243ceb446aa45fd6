"""Read multipart files into memory with a size cap, before any validation or write."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from app.errors import PayloadTooLarge
from app.services.concepts import Upload
from app.settings import StorageSettings
from app.storage import ValidImage, validate_image


async def read_uploads(files: Sequence[UploadFile], max_bytes: int) -> list[Upload]:
    uploads = []
    for f in files:
        data = await f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"{f.filename or 'upload'}: more than the limit of {max_bytes} bytes"
            )
        uploads.append(Upload(data=data, filename=f.filename, content_type=f.content_type))
    return uploads


async def read_valid_images(
    files: Sequence[UploadFile], storage: StorageSettings
) -> list[ValidImage]:
    """Read and validate query photos (all of them before anything is done with any)."""
    uploads = await read_uploads(files, storage.max_upload_bytes)

    def validate_all() -> list[ValidImage]:
        return [
            validate_image(
                u.data,
                u.filename,
                u.content_type,
                max_bytes=storage.max_upload_bytes,
                max_pixels=storage.max_image_pixels,
            )
            for u in uploads
        ]

    # Decoding is CPU work: off the event loop, so other requests go on meanwhile.
    return await run_in_threadpool(validate_all)
