"""The API docs (Swagger UI from local assets, and the schema behind auth) and the
static files the console and the docs load."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .._errors import ServiceError
from .._state import Service
from ._render import SignInNeededError, render, to_sign_in, viewer_of

__all__ = ["router"]

_STATIC_ROOTS = {
    "console": Path(__file__).parent / "static",
    # Swagger UI 5 (OpenAPI 3.1, which FastAPI writes), as shipped in fastapi-offline.
    "swagger": Path(fastapi_offline.__file__).parent / "static",
}

router = APIRouter()


@router.get("/openapi.json")
async def openapi(request: Request, service: Service) -> Response:
    try:
        viewer_of(request, service)
    except SignInNeededError:
        raise ServiceError(
            401, "unauthorized", "an API key is required (Authorization: Bearer <key>)"
        ) from None
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request, service: Service) -> Response:
    try:
        viewer = viewer_of(request, service)
    except SignInNeededError:
        # A person in a browser is sent to sign in; an API client gets the usual 401.
        if "text/html" in request.headers.get("accept", ""):
            return to_sign_in(request)
        if "authorization" in request.headers:
            raise ServiceError(401, "unauthorized", "the API key is invalid or revoked") from None
        raise ServiceError(
            401, "unauthorized", "an API key is required (sign in at /login)"
        ) from None
    return render(request, service, "docs.html", viewer)


@router.get("/static/{area}/{path:path}")
async def static(area: str, path: str) -> Response:
    root = _STATIC_ROOTS.get(area)
    if root is None:
        raise ServiceError(404, "not_found", "no such file")
    target = (root / path).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise ServiceError(404, "not_found", "no such file")
    return FileResponse(target, headers={"Cache-Control": "public, max-age=3600"})
