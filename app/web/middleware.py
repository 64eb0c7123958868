"""ASGI middleware: security headers on every answer, a request body size cap (413) and a Host header check
(400 unless the Host is one the server is meant to be reached by: stops DNS rebinding)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline scripts or styles anywhere in our pages. /docs (Swagger UI, served locally) starts itself with an
# inline script, so it alone may run inline code — still from this origin only. Exact paths, no prefix match.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs"})


class SecurityHeaders:
    """Adds CSP, nosniff, frame and referrer policies; `Vary: HX-Request` since pages answer partials to htmx."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"same-origin"), (b"vary", b"HX-Request")]
                extra.append((b"content-security-policy", (DOCS_CSP if docs else CSP).encode()))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """Answers 413 JSON when a request body is larger than `max_bytes` (by Content-Length or while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body too large; the limit is {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send)
                    return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)


class _TooLarge(HTTPException):
    """Raised while streaming an over-long body; the app's HTTP error handler turns it into a 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body too large; the limit is {max_bytes} bytes")


def host_of(header: str) -> str | None:
    """The host part of a Host header, lower case, IPv6 kept in brackets; None when it is malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0 or (header[end + 1:] and not header[end + 1:].startswith(":")):
            return None
        return header[:end + 1]
    host, _, port = header.partition(":")
    if not host or (port and not port.isdigit()) or ":" in port:
        return None
    return host


def host_pattern(pattern: str) -> str:
    """An allowed_hosts entry in the form host_of gives (bare IPv6 addresses get brackets)."""
    pattern = pattern.strip().lower()
    if ":" in pattern and not pattern.startswith("["):
        return f"[{pattern}]"
    return pattern


class TrustedHosts:
    """Answers 400 JSON unless the Host header matches `allowed` ("name", "*.suffix" or "*" for any).

    Starlette's TrustedHostMiddleware splits the Host header at the first colon in the versions we support,
    which never matches an IPv6 host such as [::1]; this one parses brackets."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = [host_pattern(p) for p in allowed]
        self.any = "*" in self.allowed

    def allows(self, host: str | None) -> bool:
        """Whether a parsed host matches one of the allowed patterns."""
        if host is None:
            return False
        return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
        if self.allows(host_of(raw.decode("latin-1"))):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": "invalid Host header; this server answers only to its configured host names "
                                     "(JUMPSCOPE_ALLOWED_HOSTS)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
