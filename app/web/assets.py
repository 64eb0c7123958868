"""Where the web app's templates, static files and vendored front-end files live.

A wheel carries its own copy in `app/web/_assets/` (`templates/`, `static/`, `vendor/`), written at build time by
setup.py and never committed. Without it (a source checkout, an editable install, the tests) the top-level
`templates/` and `static/` folders and `node_modules/` (from `npm ci`) are used.

Standard library only: setup.py loads this file by path to learn what to copy.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ASSETS = Path(__file__).resolve().parent / "_assets"  # the copy inside an installed wheel
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the repository root of a source checkout

# Name served under /static/vendor/ → (npm package, file inside it); versions are pinned in package-lock.json.
VENDOR_FILES: dict[str, tuple[str, str]] = {
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
    "swagger-ui-bundle.js": ("swagger-ui-dist", "swagger-ui-bundle.js"),
    "swagger-ui.css": ("swagger-ui-dist", "swagger-ui.css"),
}
# Files shipped beside the vendored ones so the wheel carries each package's licence terms.
LICENSE_FILES = ("LICENSE", "NOTICE")


def packaged() -> bool:
    """True when this is an installed wheel carrying its own assets."""
    return (PACKAGE_ASSETS / "templates").is_dir()


def templates_dir() -> Path:
    """The Jinja2 templates folder."""
    return PACKAGE_ASSETS / "templates" if packaged() else SOURCE_ROOT / "templates"


def static_dir() -> Path:
    """The folder served at /static (the app's own CSS, JS and icons)."""
    return PACKAGE_ASSETS / "static" if packaged() else SOURCE_ROOT / "static"


def vendor_files() -> dict[str, Path]:
    """Name under /static/vendor/ → the file to serve (the wheel's copy, else the one in node_modules)."""
    if packaged():
        return {name: PACKAGE_ASSETS / "vendor" / name for name in VENDOR_FILES}
    return {name: SOURCE_ROOT / "node_modules" / package / rel for name, (package, rel) in VENDOR_FILES.items()}
