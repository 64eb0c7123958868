"""Build hook: a wheel carries the web app's templates, static files and pinned npm assets.

Everything else is declared in pyproject.toml. At build time (`pip install .`, `pip wheel .`, `python -m build`)
`build_py` copies the top-level `templates/` and `static/` folders and the files named in app/web/assets.py from
`node_modules/` (running `npm ci` first when they are missing) into `app/web/_assets/` of the build folder, so the
copies exist only inside the wheel, never in git. Editable installs skip the copy: they read the source tree.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("jumpscope.setup")


def _assets_module():
    """app/web/assets.py loaded by path (importing `app` would need the runtime dependencies)."""
    spec = importlib.util.spec_from_file_location("_jumpscope_assets", ROOT / "app" / "web" / "assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def npm_ci(root: Path) -> None:
    """Install the pinned npm packages (package-lock.json) without running install scripts (no telemetry)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("building JumpScope needs npm (Node.js) to fetch htmx and swagger-ui from "
                           "package-lock.json, or a node_modules/ folder made by `npm ci`")
    env = {**os.environ, "SCARF_ANALYTICS": "false"}
    subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=root, env=env, check=True)


def copy_assets(root: Path, target: Path) -> None:
    """Write `templates/`, `static/` and `vendor/` (with each npm package's licence) under `target`."""
    assets = _assets_module()
    node_modules = root / "node_modules"
    sources = {name: node_modules / pkg / rel for name, (pkg, rel) in assets.VENDOR_FILES.items()}
    if not all(p.is_file() for p in sources.values()):
        npm_ci(root)
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"npm ci did not provide {', '.join(missing)}")
    if target.exists():
        shutil.rmtree(target)  # no stale files from an earlier build
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(root / "templates", target / "templates", ignore=ignore)
    shutil.copytree(root / "static", target / "static", ignore=ignore)
    vendor = target / "vendor"
    vendor.mkdir(parents=True)
    for name, src in sources.items():
        shutil.copyfile(src, vendor / name)
    for pkg in sorted({pkg for pkg, _ in assets.VENDOR_FILES.values()}):
        for license_name in assets.LICENSE_FILES:
            if (node_modules / pkg / license_name).is_file():
                (vendor / "licenses" / pkg).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(node_modules / pkg / license_name, vendor / "licenses" / pkg / license_name)
    log.info("copied templates, static files and %d vendored files into %s", len(sources), target)


class BuildPyWithAssets(build_py):
    """`build_py` that also copies the web assets into the built package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        copy_assets(ROOT, Path(self.build_lib) / "app" / "web" / "_assets")


setup(cmdclass={"build_py": BuildPyWithAssets})
