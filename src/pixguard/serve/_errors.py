"""Errors as JSON ``{code, message, request_id}``, with the status mapped from
pixguard's error codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .._exceptions import ImageError, PixguardError

__all__ = ["ServiceError", "error_response", "install_error_handlers", "status_for"]

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
    headers: dict[str, str] | None = None,
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

    @app.exception_handler(PixguardError)
    async def pixguard_error(request: Request, exc: PixguardError) -> JSONResponse:
        return error_response(request, status_for(exc), exc.code, str(exc))
