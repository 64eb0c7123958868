"""The FastAPI web app (the only package besides app/cli/serve.py that imports the web stack)."""

from app.web.app import create_app
from app.web.settings import Settings

__all__ = ["Settings", "create_app"]
