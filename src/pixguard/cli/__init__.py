"""The ``pixguard`` command line (Typer)."""

from ._main import app, main

__all__ = ["app", "main"]
