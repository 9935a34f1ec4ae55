"""Reading request bodies: type checked first, bounded in bytes and in time, images
from a raw body or multipart."""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ._errors import ServiceError
from ._state import ServiceState

__all__ = ["read_body", "read_images"]

_RAW_TYPES = ("application/octet-stream",)
# Text formats that say image/* but that pixguard never decodes.
_REFUSED_IMAGE_TYPES = frozenset({"image/svg+xml"})
_MULTIPART = "multipart/form-data"


async def read_body(request: Request, limit: int, deadline_s: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all,
    and a client that takes longer than ``deadline_s`` to send it (408)."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ServiceError(
            413, "image_too_large", f"the request body is larger than {limit:,} bytes"
        )
    chunks, size = [], 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(
                        413, "image_too_large", f"the request body is larger than {limit:,} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise ServiceError(
            408,
            "request_timeout",
            f"the request body did not arrive within {deadline_s:g} s",
            {"Connection": "close"},
        ) from None
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was read
    return body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_images(request: Request, service: ServiceState) -> list[tuple[str, bytes]]:
    """The uploaded images: a raw body (image/*) or multipart form files. The content
    type is checked before a byte of the body is read."""
    settings = service.settings
    content_type = _media_type(request)
    raw = content_type in _RAW_TYPES or (
        content_type.startswith("image/") and content_type not in _REFUSED_IMAGE_TYPES
    )
    if not raw and content_type != _MULTIPART:
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"{content_type or 'a body without a content type'} is not accepted: send an "
            "image body (image/*, not SVG) or multipart/form-data files",
        )
    body = await read_body(request, settings.max_upload_bytes, settings.body_timeout_s)
    if raw:
        if not body:
            raise ServiceError(422, "image_empty", "the request body is empty")
        return [("body", body)]
    try:
        # One file more than allowed is parsed, so that too many gets its own 413.
        form = await request.form(max_files=settings.max_images_per_request + 1)
    except HTTPException as exc:
        if "too many files" in str(exc.detail).lower():
            raise _too_many(settings.max_images_per_request) from None
        raise ServiceError(400, "multipart_invalid", f"bad multipart body: {exc.detail}") from None
    files = [
        (value.filename or key, await value.read())
        for key, value in form.multi_items()
        if isinstance(value, UploadFile)
    ]
    if not files:
        raise ServiceError(422, "image_empty", "the form holds no files")
    if len(files) > settings.max_images_per_request:
        raise _too_many(settings.max_images_per_request)
    return files


def _too_many(limit: int) -> ServiceError:
    return ServiceError(413, "too_many_images", f"at most {limit} images per request")
