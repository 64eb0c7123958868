"""What routes need from the running app, in one place: the loaded model services, the settings, the page
templates and whether the admin is on.

Every route module reads these through here instead of `request.app.state`; each function also works as a
FastAPI dependency (`services: ServicesDep`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from app.web.services import Services
from app.web.settings import Settings


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


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
