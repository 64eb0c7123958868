"""Admin authentication: a bearer token from settings, a login session for the /admin pages, and CSRF tokens.

- API clients send `Authorization: Bearer <token>`; tokens are compared in constant time (hmac.compare_digest).
- The /admin login form trades the token for a session cookie (HttpOnly, SameSite=Strict, path=/, Secure per
  settings.cookie_secure). The cookie holds only a random session id; sessions live server-side in memory
  (app.web.sessions), so logout ends one for good, a restart ends all, and a changed token ends every older one.
  Sessions expire after SESSION_TTL.
- State-changing requests authenticated by the cookie must carry the session's CSRF token (form field
  `csrf_token` or header `X-CSRF-Token`), a random value kept with the session. The login form itself uses a
  double-submit token (cookie + hidden field) since there is no session yet.
- Failed logins and wrong bearer tokens are counted per client address (app.web.throttle): past
  settings.auth_failures_per_minute in a minute the client gets 429 with Retry-After.
- `prepare_admin(settings, host)` is for `jumpscope serve`: with no token the admin refuses to start on a public
  bind address (its routes answer 403, the rest of the app serves); on localhost a random token is made for the
  run and logged once. A token shorter than MIN_PUBLIC_TOKEN is refused on a public address.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.responses import Response
from pydantic import SecretStr

from app.web.deps import app_state, get_settings
from app.web.sessions import SessionStore
from app.web.throttle import FailureThrottle

log = logging.getLogger(__name__)

SESSION_COOKIE = "jumpscope_admin"
LOGIN_CSRF_COOKIE = "jumpscope_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 12 * 3600  # seconds a login lasts
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MIN_PUBLIC_TOKEN = 16  # shortest admin token accepted on a non-loopback address


@dataclass(frozen=True)
class AdminAuth:
    """Who passed the admin check: via "bearer" or "cookie"; `csrf` is the session's token (cookie only)."""

    via: str
    csrf: str | None = None


# --- the token --------------------------------------------------------------------------------------------
def admin_token(request: Request) -> str | None:
    """The configured admin token (None when the admin is off)."""
    settings = get_settings(request)
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

    A configured token is used as is, but one shorter than MIN_PUBLIC_TOKEN characters is refused (ValueError)
    on a public address — a non-loopback bind, or loopback behind a trusted proxy (settings.forwarded_allow_ips)
    — and warned about on localhost. Without one, the admin refuses to start on a non-loopback address (its
    routes answer 403 while the rest of the app serves); on localhost a random token is made for this run, set
    on `settings` and logged so the operator can log in.
    """
    token = settings.admin_token_value() if hasattr(settings, "admin_token_value") else settings.admin_token
    if token:
        if len(token) < MIN_PUBLIC_TOKEN:
            if not is_loopback(host) or getattr(settings, "forwarded_allow_ips", None):
                raise ValueError(f"the admin token is only {len(token)} characters; on a public address "
                                 f"JUMPSCOPE_ADMIN_TOKEN needs at least {MIN_PUBLIC_TOKEN} random characters")
            log.warning("the admin token is short (%d characters); use at least %d random characters",
                        len(token), MIN_PUBLIC_TOKEN)
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
def session_store(request: Request) -> SessionStore:
    """The app's live admin sessions."""
    return app_state(request, "admin_sessions", lambda: SessionStore(SESSION_TTL))


def start_session(request: Request, token: str) -> str:
    """A new server-side session; returns the cookie value (a random id)."""
    session_id, _ = session_store(request).create(token)
    return session_id


def end_session(request: Request) -> None:
    """Revoke the session of this request's cookie (logout): the cookie stops working even if kept."""
    session_store(request).revoke(request.cookies.get(SESSION_COOKIE))


def _cookie_secure(request: Request) -> bool:
    """settings.cookie_secure when set; otherwise Secure exactly when the request came over https."""
    configured = getattr(get_settings(request), "cookie_secure", None)
    return bool(configured) if configured is not None else request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    """HttpOnly, SameSite=Strict, Secure per settings.cookie_secure (default: when served over https)."""
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_TTL, path="/", httponly=True, samesite="strict",
                        secure=_cookie_secure(request))


def clear_session_cookie(response: Response, request: Request | None = None) -> None:
    """Tell the browser to drop the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_cookie_secure(request) if request is not None else False)


def login_csrf_value(request: Request) -> str:
    """Double-submit token for the login form (the same random value goes in a cookie and a hidden field)."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(16)


def set_login_csrf_cookie(response: Response, request: Request, value: str) -> None:
    """The login form's double-submit cookie (HttpOnly, SameSite=Strict, path /admin)."""
    response.set_cookie(LOGIN_CSRF_COOKIE, value, max_age=3600, path="/admin", httponly=True, samesite="strict",
                        secure=_cookie_secure(request))


def login_csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether the login form's hidden token matches its cookie."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and submitted) and tokens_equal(submitted, cookie)


# --- throttling of failed credentials ---------------------------------------------------------------------
def _throttle(request: Request) -> FailureThrottle:
    limit = getattr(get_settings(request), "auth_failures_per_minute", 10)
    return app_state(request, "auth_throttle", lambda: FailureThrottle(limit=limit, window=60.0))


def client_address(request: Request) -> str:
    """The client's address (the proxy's X-Forwarded-For only when uvicorn trusts that proxy)."""
    return request.client.host if request.client else "unknown"


def check_throttle(request: Request) -> None:
    """429 with Retry-After while this client has too many recent failures."""
    wait = _throttle(request).retry_after(client_address(request))
    if wait is not None:
        raise HTTPException(429, f"too many failed admin logins from your address; try again in {wait} s",
                            headers={"Retry-After": str(wait)})


def note_failure(request: Request) -> None:
    """Count a wrong token from this client."""
    address = client_address(request)
    _throttle(request).record_failure(address)
    log.warning("failed admin authentication from %s", address)


# --- checks -----------------------------------------------------------------------------------------------
def session_admin(request: Request) -> AdminAuth | None:
    """The logged-in admin of this request's session cookie; None when there is none (never raises, no throttle).

    Pages use it to decide whether to show admin-only controls (the explanation form)."""
    token = admin_token(request)
    if token is None:
        return None
    session = session_store(request).get(request.cookies.get(SESSION_COOKIE), token)
    return AdminAuth("cookie", session.csrf) if session else None


def authenticate(request: Request) -> AdminAuth | None:
    """Bearer header or session cookie; None when neither is valid. Raises 403 when the admin is off and 429 while
    the client is throttled for failed attempts (a wrong bearer token counts as one)."""
    token = admin_token(request)
    if token is None:
        raise HTTPException(403, "the admin is disabled: no admin token is configured (JUMPSCOPE_ADMIN_TOKEN)")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        check_throttle(request)
        if tokens_equal(given.strip(), token):
            return AdminAuth("bearer")
        note_failure(request)
        return None
    return session_admin(request)


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
