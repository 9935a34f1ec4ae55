"""The web console served at ``/`` by ``pixguard serve``: one router per area,
gathered in :data:`router` and kept out of the API schema."""

from fastapi import APIRouter

from . import _decisions, _docs, _pages, _sign_in, _stats
from ._render import CONTENT_SECURITY_POLICY

__all__ = ["CONTENT_SECURITY_POLICY", "router"]

router = APIRouter(include_in_schema=False)
for _area in (_sign_in, _pages, _decisions, _stats, _docs):
    router.include_router(_area.router)
