"""One APIRouter per area. A new area is a new ``_name.py`` here holding a
``router``, listed in :data:`ROUTERS`; ``create_app`` includes them all."""

from __future__ import annotations

from fastapi import APIRouter

from ..console import router as console_router
from . import _classify, _decisions, _health, _index, _jobs, _review

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    _health.router,
    _classify.router,
    _decisions.router,
    _index.router,
    _jobs.router,
    _review.router,
    console_router,
)
