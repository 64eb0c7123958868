"""What routes need from the running app, in one place: the loaded model services, the settings, the page
templates, whether the admin is on, and the per-app objects auth keeps (`app_state`).

Every route module and app.web.auth read these through here instead of `request.app.state` (create_app sets
them; app.web.admin_service keeps the job runner there, for the lifespan too); each `get_*` function also works
as a FastAPI dependency (`services: ServicesDep`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from app.web.services import Services
from app.web.settings import Settings

T = TypeVar("T")


def get_services(request: Request) -> Services:
    """The loaded LM and SAEs (model work goes through `Services.run`)."""
    return request.app.state.services


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def get_templates(request: Request) -> Jinja2Templates:
    """The Jinja2 environment of the pages and partials."""
    return request.app.state.templates


def admin_enabled(request: Request) -> bool:
    """Whether an admin token is configured (the admin pages and explanation editing are on)."""
    return get_settings(request).admin_token is not None


def app_state(request: Request, name: str, factory: Callable[[], T]) -> T:
    """app.state.<name>, made with `factory` on first use for apps not built by create_app."""
    state = request.app.state
    value = getattr(state, name, None)
    if value is None:
        value = factory()
        setattr(state, name, value)
    return value


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
