"""How `jumpscope serve` runs uvicorn: which Host names to answer, which proxy to trust, and limits that stop
slow or idle clients from holding connections forever.

uvicorn times out idle keep-alive connections but has no timeout for a client that opens a connection and never
finishes its request headers (a "slowloris"); `HeaderTimeoutH11` adds one. Behind a reverse proxy (recommended on
a public address) the proxy does this too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.web.auth import is_loopback
from app.web.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")
MAX_HEADER_BYTES = 16 * 1024  # h11's limit for an incomplete request head


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request's headers: a connection that has not sent a
    complete request head within `header_timeout` seconds of opening (or of its next request's first byte)
    is closed."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_headers():
            self._arm_header_timer()  # a new request has begun: its head has header_timeout to arrive
        else:
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            log.info("closing a connection from %s: no complete request headers within %.0f s",
                     self.client[0] if self.client else "?", self.header_timeout)
            self.transport.close()


def protocol_with_timeout(header_timeout: float) -> type[HeaderTimeoutH11]:
    """A HeaderTimeoutH11 subclass with this deadline (uvicorn instantiates the class itself)."""
    return type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": float(header_timeout)})


def default_allowed_hosts(host: str) -> list[str]:
    """Host names to answer when allowed_hosts is unset: on loopback the bind host and the loopback names, on a
    named public address just that address, on a wildcard bind (0.0.0.0, ::) any name (with a warning)."""
    if host in WILDCARD_HOSTS:
        log.warning("serving on %s with any Host header; set JUMPSCOPE_ALLOWED_HOSTS to the names this server is "
                    "reached by (guards against DNS rebinding)", host or "all interfaces")
        return ["*"]
    bind = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if is_loopback(host):
        return list(dict.fromkeys([bind.lower(), *LOOPBACK_NAMES]))
    return [bind.lower()]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run: slow-client limits and the trusted proxy (if any)."""
    proxies = settings.forwarded_allow_ips
    return {
        "http": protocol_with_timeout(settings.header_timeout),
        "timeout_keep_alive": settings.timeout_keep_alive,
        "limit_concurrency": settings.limit_concurrency,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": list(proxies) if proxies else None,
        "server_header": False,
    }
