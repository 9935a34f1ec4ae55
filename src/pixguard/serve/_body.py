"""Reading request bodies: bounded in bytes, images from a raw body or multipart."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from ._errors import ServiceError
from ._state import ServiceState

__all__ = ["read_body", "read_images"]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(
            413, "image_too_large", f"the request body is larger than {limit:,} bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServiceError(
                413, "image_too_large", f"the request body is larger than {limit:,} bytes"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was read
    return body


async def read_images(request: Request, service: ServiceState) -> list[tuple[str, bytes]]:
    """The uploaded images: a raw body (image/*) or multipart form files."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, service.settings.max_upload_bytes)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if not body:
            raise ServiceError(422, "image_empty", "the request body is empty")
        return [("body", body)]
    if content_type == "multipart/form-data":
        form = await request.form(max_files=service.settings.max_images_per_request)
        files = [
            (value.filename or key, await value.read())
            for key, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
        if not files:
            raise ServiceError(422, "image_empty", "the form holds no files")
        return files
    raise ServiceError(
        415, "unsupported_media_type", "send an image body (image/*) or multipart/form-data files"
    )
