"""Admin authentication: a bearer token from settings, a login cookie for the /admin pages, and CSRF tokens.

- API clients send `Authorization: Bearer <token>`; tokens are compared in constant time (hmac.compare_digest).
- The /admin login form trades the token for a session cookie (HttpOnly, SameSite=Strict, path=/). The cookie is
  `<nonce>.<issued>.<hmac>` signed with a key derived from the admin token, so it never holds the token itself,
  expires after SESSION_TTL, and every session dies when the token changes.
- State-changing requests authenticated by the cookie must carry the session's CSRF token (form field
  `csrf_token` or header `X-CSRF-Token`): HMAC(key, "csrf:" + nonce), tied to that session. The login form
  itself uses a double-submit token (cookie + hidden field) since there is no session yet.
- `prepare_admin(settings, host)` is for `jumpscope serve`: with no token the admin refuses to start on a public
  bind address (its routes answer 403, the rest of the app serves); on localhost a random token is made for the
  run and logged once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.responses import Response
from pydantic import SecretStr

log = logging.getLogger(__name__)

SESSION_COOKIE = "jumpscope_admin"
LOGIN_CSRF_COOKIE = "jumpscope_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 12 * 3600  # seconds a login lasts
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class AdminAuth:
    """Who passed the admin check: via "bearer" or "cookie"; `csrf` is the session's token (cookie only)."""

    via: str
    csrf: str | None = None


# --- the token --------------------------------------------------------------------------------------------
def admin_token(request: Request) -> str | None:
    """The configured admin token (None when the admin is off)."""
    settings = request.app.state.settings
    value = settings.admin_token_value() if hasattr(settings, "admin_token_value") else settings.admin_token
    return value or None


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts local connections (localhost, 127.0.0.0/8, ::1)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def prepare_admin(settings, host: str) -> str | None:
    """Settle the admin token before serving (called by `jumpscope serve`); returns the token, None = admin off.

    A configured token is used as is. Without one, the admin refuses to start on a non-loopback address (its
    routes answer 403 while the rest of the app serves); on localhost a random token is made for this run, set
    on `settings` and logged so the operator can log in.
    """
    token = settings.admin_token_value() if hasattr(settings, "admin_token_value") else settings.admin_token
    if token:
        if len(token) < 16:
            log.warning("the admin token is short (%d characters); use at least 16 random characters", len(token))
        return token
    if not is_loopback(host):
        log.warning("admin disabled: no admin token configured and %s is not a local address; set "
                    "JUMPSCOPE_ADMIN_TOKEN to train SAEs from the web app", host)
        return None
    token = secrets.token_urlsafe(24)
    settings.admin_token = SecretStr(token)
    log.warning("no admin token configured; this run's admin token is: %s", token)
    return token


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison (bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


# --- sessions and CSRF ------------------------------------------------------------------------------------
def _key(token: str) -> bytes:
    return hmac.new(token.encode(), b"jumpscope admin session v1", hashlib.sha256).digest()


def _sign(token: str, payload: str) -> str:
    return hmac.new(_key(token), payload.encode(), hashlib.sha256).hexdigest()


def make_session(token: str, now: float | None = None) -> str:
    """A fresh signed session cookie value."""
    payload = f"{secrets.token_urlsafe(16)}.{int(now if now is not None else time.time())}"
    return f"{payload}.{_sign(token, payload)}"


def session_nonce(token: str, value: str | None, now: float | None = None) -> str | None:
    """The nonce of a valid, unexpired session cookie; None otherwise."""
    if not value or value.count(".") != 2:
        return None
    nonce, issued, sig = value.split(".")
    if not tokens_equal(sig, _sign(token, f"{nonce}.{issued}")):
        return None
    try:
        age = (now if now is not None else time.time()) - int(issued)
    except ValueError:
        return None
    return nonce if 0 <= age <= SESSION_TTL else None


def csrf_token(token: str, nonce: str) -> str:
    """The CSRF token of the session with this nonce."""
    return _sign(token, f"csrf:{nonce}")


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    """HttpOnly, SameSite=Strict, Secure when served over https."""
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_TTL, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def login_csrf_value(request: Request) -> str:
    """Double-submit token for the login form (the same random value goes in a cookie and a hidden field)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(16)


def set_login_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, value, max_age=3600, path="/admin", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def login_csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and submitted) and tokens_equal(submitted, cookie)


# --- checks -----------------------------------------------------------------------------------------------
def authenticate(request: Request) -> AdminAuth | None:
    """Bearer header or session cookie; None when neither is valid. Raises 403 when the admin is off."""
    token = admin_token(request)
    if token is None:
        raise HTTPException(403, "the admin is disabled: no admin token is configured (JUMPSCOPE_ADMIN_TOKEN)")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return AdminAuth("bearer") if tokens_equal(given.strip(), token) else None
    nonce = session_nonce(token, request.cookies.get(SESSION_COOKIE))
    return AdminAuth("cookie", csrf_token(token, nonce)) if nonce else None


async def csrf_ok(request: Request, auth: AdminAuth) -> bool:
    """Safe methods and bearer requests pass; cookie-authenticated writes need the session's CSRF token."""
    if request.method in SAFE_METHODS or auth.via == "bearer":
        return True
    submitted = request.headers.get(CSRF_HEADER)
    if not submitted and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # cached by Starlette: the route can read it again
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    return bool(submitted) and tokens_equal(submitted, auth.csrf or "")


async def require_admin(request: Request) -> AdminAuth:
    """FastAPI dependency for admin routes: 401 without valid credentials, 403 on a failed CSRF check."""
    auth = authenticate(request)
    if auth is None:
        raise HTTPException(401, "admin authentication required: send 'Authorization: Bearer <token>' or log in",
                            headers={"WWW-Authenticate": "Bearer"})
    if not await csrf_ok(request, auth):
        raise HTTPException(403, "missing or invalid CSRF token; reload the admin page and try again")
    return auth
