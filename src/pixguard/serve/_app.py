"""The FastAPI application, assembled from its parts.

Models load in the lifespan (``_state``); routes live in ``routes/`` (one APIRouter
per area) and reach settings and models through ``Depends`` (override
``get_service`` in tests). Errors are JSON ``{code, message, request_id}`` with the
status mapped from pixguard's error codes (``_errors``).
"""

from __future__ import annotations

from fastapi import FastAPI

from .._version import __version__
from ._context import RequestContext
from ._errors import ServiceError, install_error_handlers
from ._settings import ServeSettings
from ._state import ClassifierFactory, ServiceState, get_service, make_lifespan
from .routes import ROUTERS

__all__ = ["ServiceError", "ServiceState", "create_app", "get_service"]


def create_app(
    settings: ServeSettings, *, classifier_factory: ClassifierFactory | None = None
) -> FastAPI:
    """The service app. ``classifier_factory`` replaces model loading (tests)."""
    app = FastAPI(
        title="pixguard",
        version=__version__,
        lifespan=make_lifespan(settings, classifier_factory),
        # The docs and the schema are served by the console router, behind auth and
        # with Swagger UI's assets from the package (no CDN).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestContext)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
