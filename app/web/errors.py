"""Exception → response mapping: JSON {"detail": ...} for /api, an HTML error page for pages. Bad input is
always a 4xx; only real bugs become a 500 (logged, with no internals in the answer)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.encoding import InputTooLong
from app.sae import SAEFormatError, UnknownLatent
from app.web.deps import get_templates
from app.web.rendering import is_htmx
from app.web.services import UnknownSAE

log = logging.getLogger(__name__)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api") or "application/json" in request.headers.get("accept", "")


def error_response(request: Request, status: int, detail) -> Response:
    """JSON for the API; the error page (or its partial for htmx) for pages."""
    if _wants_json(request) or not isinstance(detail, str):
        return JSONResponse({"detail": detail}, status_code=status)
    page = "partials/_error.html" if is_htmx(request) else "error.html"
    return get_templates(request).TemplateResponse(request, page, {"status": status, "detail": detail},
                                                   status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on the app."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(request, exc.status_code, exc.detail)
        for name, value in (getattr(exc, "headers", None) or {}).items():  # Retry-After, WWW-Authenticate
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        if _wants_json(request):
            return JSONResponse({"detail": errors}, status_code=422)
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors)
        return error_response(request, 422, text)

    @app.exception_handler(UnknownSAE)
    @app.exception_handler(UnknownLatent)
    async def not_found(request: Request, exc: KeyError) -> Response:
        return error_response(request, 404, str(exc))

    @app.exception_handler(InputTooLong)
    async def too_long(request: Request, exc: InputTooLong) -> Response:
        return error_response(request, 422, str(exc))

    @app.exception_handler(SAEFormatError)
    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> Response:
        return error_response(request, 400, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal error; see the server log")
