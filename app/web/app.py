"""The FastAPI app factory: `create_app(settings)` loads the model service and wires routes, templates,
static files, security headers and error handlers. Nothing is built at import time."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.web import assets, viz
from app.web.auth import SESSION_TTL
from app.web.errors import install_error_handlers
from app.web.middleware import BodySizeLimit, SecurityHeaders, TrustedHosts
from app.web.routes import admin, api, attribution, pages, workbench
from app.web.services import Services
from app.web.sessions import SessionStore
from app.web.settings import Settings
from app.web.throttle import FailureThrottle

log = logging.getLogger(__name__)


def make_templates() -> Jinja2Templates:
    """Jinja2 templates with autoescaping (the Starlette default for .html) and our view helpers."""
    templates = Jinja2Templates(directory=str(assets.templates_dir()))
    templates.env.globals.update(heat=viz.heat_level, histogram_bars=viz.histogram_bars, fmt=viz.fmt,
                                 show_token=viz.show_token, heat_signed=viz.heat_signed, theta_bars=viz.theta_bars,
                                 scatter=viz.scatter)
    return templates


def _vendor_files(settings: Settings) -> dict[str, Path]:
    """Name under /static/vendor/ → file to serve: the wheel's copy, else node_modules (`npm ci`); htmx may be
    overridden by settings.htmx_path."""
    return {**assets.vendor_files(), "htmx.min.js": Path(settings.htmx_path)}


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. `services` lets a caller (tests, the CLI) pass an already loaded model service."""
    settings = settings or Settings()
    if services is None:
        services = Services.load(settings.model, settings.saes, device=settings.device, dtype=settings.dtype)
    app = FastAPI(
        title="JumpScope",
        summary="Explore, steer and train JumpReLU sparse autoencoders on language-model activations.",
        version="0.1.0",
        docs_url=None,  # served below with local Swagger UI files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.services = services
    app.state.templates = make_templates()
    app.state.admin_sessions = SessionStore(SESSION_TTL)  # in memory: logout, token change and restart end them
    app.state.auth_throttle = FailureThrottle(limit=settings.auth_failures_per_minute, window=60.0)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.allowed_hosts is not None:  # `jumpscope serve` always sets it (default: its bind host)
        app.add_middleware(TrustedHosts, allowed=list(settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)

    vendor = _vendor_files(settings)
    for name, path in vendor.items():
        if not path.is_file():
            log.warning("%s not found at %s; run `npm ci` (make install does) or install the wheel", name, path)

    @app.get("/static/vendor/{name}", include_in_schema=False)
    async def vendor_file(name: str) -> FileResponse:
        """Third-party front-end files from the pinned npm packages (never a CDN or a git copy)."""
        path = vendor.get(name)
        if path is None or not path.is_file():
            raise HTTPException(404, f"{name} is not installed; run `npm ci`")
        return FileResponse(path, media_type="text/css" if name.endswith(".css") else "text/javascript")

    @app.get("/docs", include_in_schema=False)
    async def swagger_docs() -> HTMLResponse:
        """OpenAPI docs with Swagger UI served locally, so they work offline."""
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="JumpScope API",
                                   swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=str(assets.static_dir())), name="static")
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(pages.router)
    app.include_router(workbench.router)
    app.include_router(attribution.router)
    return app
