"""The console's working pages: moderate, review, escalations and generate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from .._keys import Role
from .._state import Service
from ._render import SignInNeededError, render, to_sign_in, viewer_of, viewer_or_none

__all__ = ["router"]

router = APIRouter()


def _page(name: str, role: Role = Role.client, **fixed: Any) -> Any:
    """A GET page for callers with at least ``role``."""

    async def page(request: Request, service: Service) -> Response:
        try:
            viewer = viewer_of(request, service)
        except SignInNeededError:
            return to_sign_in(request)
        if not viewer.can(role):
            return render(
                request,
                service,
                "error.html",
                viewer,
                status_code=403,
                message=f"This page needs a {role.value} key; you are signed in as a "
                f"{viewer.role.value}.",
            )
        return render(request, service, name, viewer, **fixed)

    return page


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/moderate", status_code=303)


router.add_api_route("/moderate", _page("moderate.html"), methods=["GET"])
router.add_api_route(
    "/review", _page("review.html", Role.reviewer, queue="pending"), methods=["GET"]
)
router.add_api_route(
    "/escalations", _page("review.html", Role.admin, queue="escalated"), methods=["GET"]
)


@router.get("/generate")
async def generate_page(request: Request, service: Service) -> Response:
    if service.jobs is None:
        return render(
            request,
            service,
            "error.html",
            viewer_or_none(request, service),
            status_code=404,
            message="Generation is not configured on this server (--generate-variant).",
        )
    return await _page("generate.html")(request, service)
