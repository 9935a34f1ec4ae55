"""The web console served at ``/`` by ``pixguard serve``."""

from ._pages import CONTENT_SECURITY_POLICY, router

__all__ = ["CONTENT_SECURITY_POLICY", "router"]
