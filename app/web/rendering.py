"""Page rendering: every page route answers an htmx request with its result partial and a plain request with
the full page, from the same template context (plus what every page shows: the SAE list, model, admin link)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from app.web.deps import admin_enabled, get_services, get_templates
from app.web.public_names import model_label


def is_htmx(request: Request) -> bool:
    """Whether htmx sent the request (it then gets only the partial)."""
    return request.headers.get("HX-Request") == "true"


def render(request: Request, page: str, partial: str, ctx: dict[str, Any], status: int = 200,
           push_url: str | None = None) -> Response:
    """The partial for htmx, the full page otherwise."""
    services = get_services(request)
    base = {"saes": services.entries(), "model_name": model_label(services.lm.name),
            "admin_enabled": admin_enabled(request)}
    response = get_templates(request).TemplateResponse(request, partial if is_htmx(request) else page,
                                                       {**base, **ctx}, status_code=status)
    if push_url and is_htmx(request):
        response.headers["HX-Push-Url"] = push_url
    return response
