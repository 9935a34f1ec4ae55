"""Errors as JSON ``{code, message, request_id}``, with the status mapped from
pixguard's error codes."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from .._exceptions import ImageError, PixguardError

__all__ = [
    "ERROR_RESPONSES",
    "ErrorBody",
    "ServiceError",
    "error_response",
    "install_error_handlers",
    "status_for",
]

# pixguard error code -> HTTP status; anything not listed is 422 for images, 500 otherwise.
_STATUS = {
    "image_too_large": 413,
    "image_too_many_pixels": 422,
    "index_model_mismatch": 409,
    "index_entry_not_found": 404,
    "index_error": 409,
    "review_item_not_found": 404,
    "review_conflict": 409,
    "review_invalid": 422,
    "image_unsupported_format": 415,
}

# Starlette's own errors (unknown route, wrong method, bad multipart) -> stable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


class ErrorBody(BaseModel):
    """Every error answer (and what the OpenAPI schema promises for each)."""

    code: str
    message: str
    request_id: str | None


#: The error answers every router documents (replacing FastAPI's own 422 schema).
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad request (a malformed multipart body)"),
        (401, "Missing or invalid API key"),
        (403, "The key's role does not allow this, or a console write lacks its CSRF token"),
        (404, "Not found"),
        (408, "The request body was too slow"),
        (409, "Conflict: a review item claimed by another reviewer, or already decided"),
        (413, "Too large, or too many images"),
        (415, "Unsupported media type"),
        (422, "Invalid parameters or image"),
        (429, "Rate limited or queue full"),
        (500, "Internal error"),
        (504, "Timed out"),
    )
}


class ServiceError(Exception):
    """An HTTP error with a stable ``code``; answered as JSON by the app."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def status_for(error: PixguardError) -> int:
    if error.code in _STATUS:
        return _STATUS[error.code]
    return 422 if isinstance(error, ImageError) else 500


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "request_id": getattr(request.state, "request_id", None),
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return error_response(request, 422, "invalid_request", problems or "invalid request")

    @app.exception_handler(PixguardError)
    async def pixguard_error(request: Request, exc: PixguardError) -> JSONResponse:
        return error_response(request, status_for(exc), exc.code, str(exc))
