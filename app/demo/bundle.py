"""The demo bundle in the cache directory: find it, or build it atomically when it is missing.

`<cache>/demo/` (or `demo-small/`) holds the files `app.demo.layout` names. The folder is built as a temporary
sibling and renamed into place, so it is either complete or absent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.demo.build import Progress, build_bundle
from app.demo.build_config import BuildConfig
from app.demo.layout import BUNDLE_VERSION, DEMO_NAME, SMALL_NAME, BundleLayout
from app.runtime import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoBundle:
    """Paths of a complete demo bundle."""

    root: Path
    model_dir: Path
    sae_dir: Path
    report_path: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> DemoBundle:
        layout = BundleLayout.at(root)
        return cls(layout.root, layout.model_dir, layout.sae_dir, layout.report)

    def is_complete(self) -> bool:
        """True when every part the app and the report need is present, built by this bundle version."""
        layout = BundleLayout.at(self.root)
        needed = (self.model_dir / "config.json", self.sae_dir / "cfg.json", layout.sae_eval, layout.sae_index,
                  self.report_path, layout.build_info)
        if not all(p.exists() for p in needed):
            return False
        try:
            version = json.loads(layout.build_info.read_text()).get("bundle_version")
        except (OSError, ValueError, AttributeError):
            return False
        if version != BUNDLE_VERSION:
            log.info("the demo bundle in %s is version %s, this code builds %s: rebuilding", self.root, version,
                     BUNDLE_VERSION)
            return False
        return True


def default_cache_dir() -> Path:
    """$JUMPSCOPE_CACHE, else ~/.cache/jumpscope (`app.runtime.cache_dir`)."""
    return cache_dir()


def bundle_root(cache_dir: str | os.PathLike | None = None, small: bool = False) -> Path:
    """Where the (small) demo bundle lives in a cache directory."""
    return Path(cache_dir or default_cache_dir()).expanduser() / (SMALL_NAME if small else DEMO_NAME)


def _log_progress(message: str, fraction: float) -> None:
    log.info("demo build %3.0f%%: %s", 100 * fraction, message)


def ensure_demo(cache_dir: str | os.PathLike | None = None, progress: Progress | None = None,
                small: bool = False) -> DemoBundle:
    """The demo bundle in `cache_dir`, built first when it is missing or incomplete.

    `progress(message, fraction)` is called during a build (default: log lines).
    """
    bundle = DemoBundle.at(bundle_root(cache_dir, small))
    if bundle.is_complete():
        return bundle
    log.info("building the demo bundle in %s (a few minutes on a CPU, once)", bundle.root)
    return build_demo(cache_dir, progress=progress, small=small)


def build_demo(cache_dir: str | os.PathLike | None = None, progress: Progress | None = None,
               small: bool = False, config: BuildConfig | None = None) -> DemoBundle:
    """(Re)build the bundle into a temporary sibling folder, then swap it into place."""
    root = bundle_root(cache_dir, small)
    root.parent.mkdir(parents=True, exist_ok=True)
    cfg = config or (BuildConfig.small() if small else BuildConfig())
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        build_bundle(tmp, cfg, progress=progress or _log_progress, final_root=root)
        _swap_into_place(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = DemoBundle.at(root)
    log.info("demo bundle ready in %s (%.1f MB)", root, bundle_size(root) / 1e6)
    return bundle


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Rename `tmp` to `root`; an existing bundle is moved aside first and removed after the swap."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        os.replace(root, old)
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def bundle_size(root: str | os.PathLike) -> int:
    """Bytes on disk of every file under `root`."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
