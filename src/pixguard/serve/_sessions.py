"""Console sessions: a random token in an HttpOnly, SameSite=Strict cookie, and a
CSRF token that every state-changing request from the console must echo.

Sessions live in memory: a restart signs everyone out, which is the safe failure.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from ._keys import ApiKey

__all__ = ["SESSION_COOKIE", "Session", "SessionStore"]

SESSION_COOKIE = "pixguard_session"


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    key: ApiKey
    expires: float

    def csrf_matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(self.csrf, candidate or "")


class SessionStore:
    """At most ``max_sessions`` live sessions (the oldest goes first), each for ``ttl_s``."""

    def __init__(self, *, ttl_s: float, max_sessions: int) -> None:
        self.ttl_s = ttl_s
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, key: ApiKey) -> Session:
        session = Session(
            token=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            key=key,
            expires=time.time() + self.ttl_s,
        )
        with self._lock:
            self._sessions[session.token] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires < time.time():
                del self._sessions[token]
                return None
            return session

    def delete(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def revoke_key(self, key_id: int) -> None:
        with self._lock:
            for token in [t for t, s in self._sessions.items() if s.key.id == key_id]:
                del self._sessions[token]
