"""The import rules of the house style, checked by importing with packages blocked.

The GPU machine has no FastAPI, so the core must import without the web stack; app.sae must not need
transformers; only app/web and the CLI's `serve` may import web packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ("fastapi", "starlette", "uvicorn", "jinja2")
WEB_MODULES = ("app/web/", "app/cli/serve.py")


def _core_modules() -> list[str]:
    """Every module under app/ except the web layer and the CLI's `serve`: derived from the tree, so a renamed or
    new module is checked rather than silently skipped."""
    names = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(WEB_MODULES[0]) or rel == WEB_MODULES[1] or path.name == "__main__.py":
            continue  # __main__ runs the CLI when imported
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


CORE = _core_modules()

# sys.modules[name] = None makes `import name` fail while find_spec() reports "not installed",
# which is how a machine without those packages looks to probing libraries (transformers probes jinja2).
_BLOCKER = """
import importlib, sys
for name in {blocked!r}:
    sys.modules[name] = None
for m in {modules!r}:
    importlib.import_module(m)
print('ok')
"""


def _import_with_blocked(modules: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = _BLOCKER.format(blocked=set(blocked), modules=modules)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_core_imports_without_the_web_stack():
    assert "app.runtime" in CORE and "app.sae" in CORE
    result = _import_with_blocked(CORE, WEB)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sae_imports_without_transformers():
    result = _import_with_blocked(["app.sae", "app.sae.sparse"], ("transformers", "tokenizers", *WEB))
    assert result.returncode == 0, result.stderr[-2000:]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted((ROOT / "app").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_web_modules_import_web_packages(path):
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith(WEB_MODULES[0]) or rel == WEB_MODULES[1]:
        return
    assert not (_imported_roots(path) & set(WEB)), f"{rel} imports a web package"


def _package_imports() -> dict[str, set[str]]:
    """{package: packages it imports} over app/'s top-level packages and modules, from every import statement
    (function-local ones included; `if TYPE_CHECKING:` blocks excluded: they never run)."""
    edges: dict[str, set[str]] = {}
    for path in sorted((ROOT / "app").rglob("*.py")):
        parts = path.relative_to(ROOT / "app").parts
        pkg = parts[0].removesuffix(".py")
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.startswith("app.") and name.split(".")[1] != pkg:
                    edges.setdefault(pkg, set()).add(name.split(".")[1])
    return edges


def test_no_import_cycle_between_packages() -> None:
    """Imports point one way (README): no package of app/ reaches itself through another's imports."""
    edges = _package_imports()
    assert edges.get("web") and "sae" in edges.get("training", set())  # the scan sees real imports
    for start in edges:
        seen, stack = set(), list(edges[start])
        while stack:
            pkg = stack.pop()
            assert pkg != start, f"import cycle: app.{start} reaches itself through app.{sorted(edges[start])}"
            if pkg not in seen:
                seen.add(pkg)
                stack.extend(edges.get(pkg, ()))
