"""Server-side admin sessions (in memory): the cookie holds only a random session id, so logging out, a token
change or a restart ends a session for good.

A session remembers a fingerprint of the admin token it was made with; when the configured token changes, every
older session stops working. Sessions expire after `ttl` seconds; at most `max_sessions` are kept (the oldest
goes first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    """One login: its CSRF token, when it expires, and which admin token it belongs to."""

    csrf: str
    expires: float
    token_tag: str


def token_tag(token: str) -> str:
    """A fingerprint of the admin token (never the token itself)."""
    return hmac.new(token.encode("utf-8"), b"jumpscope admin session v2", hashlib.sha256).hexdigest()


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """Live admin sessions keyed by a hash of their id (the raw id exists only in the browser's cookie)."""

    def __init__(self, ttl: float, max_sessions: int = 1000) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str, now: float | None = None) -> tuple[str, Session]:
        """A new session for the current admin token; returns (cookie value, session)."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + self.ttl, token_tag=token_tag(token))
        with self._lock:
            self._prune(now)
            while len(self._sessions) >= self.max_sessions:
                self._sessions.pop(next(iter(self._sessions)))  # dicts keep insertion order: the oldest
            self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None, token: str, now: float | None = None) -> Session | None:
        """The live session with this id for this admin token; None when unknown, expired or revoked."""
        if not session_id:
            return None
        now = time.time() if now is None else now
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires < now or not hmac.compare_digest(session.token_tag, token_tag(token)):
                del self._sessions[key]
                return None
            return session

    def revoke(self, session_id: str | None) -> None:
        """End one session (logout)."""
        if session_id:
            with self._lock:
                self._sessions.pop(_key(session_id), None)

    def revoke_all(self) -> None:
        """End every session (e.g. after the admin token was rotated)."""
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[key]
