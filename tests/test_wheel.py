"""A real package (issue 10, point 7): the wheel carries the templates, static files and pinned npm assets, so a
non-editable install in a fresh venv serves the demo from any folder.

The wheel is built from a clean copy of the sources (reusing node_modules/ when `npm ci` already ran), installed with
--no-deps into a fresh venv whose dependencies come from this environment through a .pth file (nothing downloaded),
and `jumpscope serve` runs from that venv in an empty folder on a small demo bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "package.json", "package-lock.json", ".npmrc",
           "app", "templates", "static")
START_TIMEOUT_S = 180


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _has_modern_setuptools() -> bool:
    """setuptools >= 70.1 here, so the build needs no isolated environment (and no download)."""
    try:
        import setuptools
    except ImportError:
        return False
    return tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2]) >= (70, 1)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUMPSCOPE_") and k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps .` of a clean copy of the sources (no stale build/ folder)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if not path.exists():
            continue  # the wheel checks below say what is missing
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_assets"))
        else:
            shutil.copy2(path, src / name)
    if (ROOT / "node_modules").is_dir():
        (src / "node_modules").symlink_to(ROOT / "node_modules")  # else setup.py runs `npm ci`
    isolation = ["--no-build-isolation"] if _has_modern_setuptools() else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(work / "dist"), str(src)],
         env=_clean_env())
    (built,) = (work / "dist").glob("jumpscope-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable); dependencies come from this environment."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], env=_clean_env())
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = _dependencies_without_app(venv.parent / "deps")
    (Path(site) / "_jumpscope_test_deps.pth").write_text(f"{deps}\n")
    return venv


def _dependencies_without_app(dest: Path) -> Path:
    """This environment's installed packages as links in one folder, minus any JumpScope copy (an editable
    install's finder or a non-editable `app/`), so the fresh venv can only import the wheel's `app`."""
    dest.mkdir()
    paths = sysconfig.get_paths()
    for folder in dict.fromkeys((paths["purelib"], paths["platlib"])):
        for entry in Path(folder).iterdir():
            skip = entry.name in ("app", "__pycache__") or entry.suffix == ".pth"
            if skip or entry.name.startswith(("jumpscope", "__editable__")) or (dest / entry.name).exists():
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory) -> Path:
    """A small demo bundle in the slot `jumpscope serve` (no arguments) looks in."""
    from app.demo.build import BuildConfig
    from app.demo.bundle import build_demo

    cache = tmp_path_factory.mktemp("demo-cache")
    build_demo(cache, config=BuildConfig.small())
    return cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy


def _get(url: str) -> tuple[int, str]:
    with _DIRECT.open(url, timeout=30) as r:
        return r.status, r.read().decode("utf-8", "replace")


def test_wheel_carries_the_web_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("templates/base.html", "static/app.css", "vendor/htmx.min.js", "vendor/swagger-ui-bundle.js",
                 "vendor/swagger-ui.css", "vendor/licenses/swagger-ui-dist/LICENSE"):
        assert f"app/web/_assets/{name}" in names, name
    assert not [n for n in names if n.startswith(("templates/", "static/", "node_modules/", "tests/"))]


def test_installed_wheel_serves_the_demo_from_any_folder(venv, demo_cache, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _clean_env()
    app_file = _run([str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"], cwd=cwd, env=env).stdout
    assert Path(app_file.strip()).resolve().is_relative_to(venv.resolve())  # the wheel's copy, not this checkout

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(venv / "bin" / "jumpscope"), "serve", "--port", str(port), "--device", "cpu",
                                   "--demo-cache", str(demo_cache), "--data-dir", str(tmp_path / "data")],
                                  cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"jumpscope serve exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no /api/health:\n{log_path.read_text()[-4000:]}"
            try:
                status, body = _get(f"{base}/api/health")
                if status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        assert json.loads(body)

        status, page = _get(f"{base}/")
        assert status == 200 and 'id="inspect-result"' in page
        htmx_url = re.search(r'<script src="(/static/[^"]*htmx[^"]*)"', page).group(1)
        status, htmx = _get(base + htmx_url)
        assert status == 200 and "htmx" in htmx[:2000] and len(htmx) > 10_000
        css_url = re.search(r'href="(/static/[^"]*\.css)"', page).group(1)
        assert _get(base + css_url)[0] == 200

        status, docs = _get(f"{base}/docs")
        assert status == 200 and "cdn" not in docs.lower()
        js_url = re.search(r"""['"](/static/[^'"]*swagger-ui-bundle\.js)['"]""", docs).group(1)
        swagger_css_url = re.search(r"""['"](/static/[^'"]*swagger-ui\.css)['"]""", docs).group(1)
        status, js = _get(base + js_url)
        assert status == 200 and "SwaggerUIBundle" in js
        status, css = _get(base + swagger_css_url)
        assert status == 200 and ".swagger-ui" in css
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_npm_install_runs_no_telemetry():
    """swagger-ui-dist pulls in @scarf/scarf, whose install script reports installs: scripts are off."""
    lines = [line.strip() for line in (ROOT / ".npmrc").read_text().splitlines()]
    npmrc = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith(("#", ";")))
    assert npmrc.get("ignore-scripts", "").strip() == "true"
    assert json.loads((ROOT / "package.json").read_text())["scarfSettings"] == {"enabled": False}
