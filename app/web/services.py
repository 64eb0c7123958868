"""The model service: one LM plus a registry of SAEs, with every model call serialised off the event loop.

Routes never touch torch: they pass a service function (app.steering, app.index.service) and its arguments
to `Services.run`, which runs it in a worker thread under a lock. Waiting requests queue on an async
capacity limiter (so they hold no thread) and the thread lock also guards callers from other threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from app.lm import LanguageModel, hook_of, load_lm
from app.sae import JumpReLUSAE, load_sae, load_sparsity
from app.sae.hub import resolve_sae_ref, sae_metadata

log = logging.getLogger(__name__)
T = TypeVar("T")


class UnknownSAE(KeyError):
    """No SAE with that id is loaded (the web layer answers 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown SAE"


@dataclass
class SAEEntry:
    """A loaded SAE and what the UI needs to know about it."""

    id: str  # URL-safe id, from the folder name
    folder: Path  # the SAE folder (or the folder holding params.npz)
    sae: JumpReLUSAE
    hook: str  # blocks.L.hook_<kind>
    metrics: dict[str, Any] = field(default_factory=dict)  # eval.json when present
    log10_density: Any = None  # sparsity.safetensors tensor or None

    @property
    def index_db(self) -> Path:
        """Where `jumpscope index` writes this SAE's dashboard database."""
        return self.folder / "index.db"

    @property
    def indexed(self) -> bool:
        return self.index_db.is_file()

    def summary(self) -> dict[str, Any]:
        """The /api/saes item: id, hook, d_in, d_sae, metrics (plus whether an index exists)."""
        return {"id": self.id, "hook": self.hook, "d_in": self.sae.d_in, "d_sae": self.sae.d_sae,
                "metrics": self.metrics, "indexed": self.indexed,
                "model_name": self.sae.cfg.metadata.get("model_name")}


def _safe_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "sae"


def _read_metrics(folder: Path) -> dict[str, Any]:
    path = folder / "eval.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


class Services:
    """The LM, the SAE registry and the lock that serialises model calls (app.state.services)."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.saes: dict[str, SAEEntry] = {}
        self.failed: dict[str, str] = {}  # SAE path -> why it could not be loaded at start-up
        self._lock = threading.RLock()
        self._limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | None, sae_paths: list[Path], device: str = "auto", dtype: str = "auto") -> Services:
        """Load the LM (default: the first SAE's metadata model_name) and every SAE (folders or Hub references)."""
        failed: dict[str, str] = {}
        local: list[Path] = []
        for ref in sae_paths:
            try:
                local.append(resolve_sae_ref(ref))  # hf:// and saelens:// → their workspace folders
            except (ValueError, OSError) as e:
                log.error("not serving SAE %s: %s", ref, e)
                failed[str(ref)] = str(e)
        sae_paths = local
        if model is None:
            if not sae_paths and failed:
                raise ValueError(next(iter(failed.values())))  # the only SAEs named cannot be resolved
            if not sae_paths:
                raise ValueError("nothing to serve: give a model (--model) and/or SAE folders (--sae)")
            model = cls._model_name_of(Path(sae_paths[0]), [Path(p) for p in sae_paths[1:]])
        lm = load_lm(model, device=device, dtype=dtype)
        services = cls(lm)
        services.failed.update(failed)
        for path in sae_paths:
            try:
                services.register_sae(path)
            except (ValueError, OSError) as e:  # SAEFormatError is a ValueError
                # One damaged or mismatched SAE must not take the others down: serve the rest, report it.
                log.error("not serving SAE %s: %s", path, e)
                services.failed[str(path)] = str(e)
        return services

    @staticmethod
    def _model_name_of(path: Path, others: list[Path] = ()) -> str:
        """model_name from the first SAE whose metadata names one (a damaged first SAE does not block)."""
        for p in (path, *others):
            name = sae_metadata(p).get("model_name")
            if name:
                return str(name)
        raise ValueError(f"{path}: cfg.json names no model_name; pass the model with --model")

    def register_sae(self, folder: str | Path, sae_id: str | None = None) -> str:
        """Load an SAE folder and add it to the registry (re-registering a folder refreshes it); returns its id.

        Called at start-up and by the admin jobs when a training job finishes. Raises ValueError when the SAE
        does not fit the loaded model (width or hook).
        """
        folder = resolve_sae_ref(folder).resolve()
        sae = load_sae(folder, device=self.lm.device)
        sae.requires_grad_(False)
        if sae.d_in != self.lm.d_model:
            raise ValueError(f"{folder}: SAE d_in {sae.d_in} does not match the model's d_model {self.lm.d_model}")
        kind, layer = hook_of(sae)
        if not 0 <= layer < self.lm.n_layers:
            raise ValueError(f"{folder}: hook layer {layer} is outside the model's layers 0..{self.lm.n_layers - 1}")
        root = folder if folder.is_dir() else folder.parent
        with self._lock:
            existing = next((e.id for e in self.saes.values() if e.folder == root), None)
            new_id = sae_id or existing or self._unique_id(_safe_id(root.name))
            self.saes[new_id] = SAEEntry(new_id, root, sae, f"blocks.{layer}.hook_{kind}", _read_metrics(root),
                                         load_sparsity(root) if root.is_dir() else None)
        log.info("SAE %s: %s (d_sae %d) at %s", new_id, root, sae.d_sae, f"blocks.{layer}.hook_{kind}")
        return new_id

    def _unique_id(self, base: str) -> str:
        candidate, n = base, 2
        while candidate in self.saes:
            candidate, n = f"{base}-{n}", n + 1
        return candidate

    # --- lookup ---------------------------------------------------------------------------------------
    def get(self, sae_id: str | None = None) -> SAEEntry:
        """The SAE with this id; the first registered one when None. UnknownSAE otherwise."""
        with self._lock:
            if sae_id is None:
                if not self.saes:
                    raise UnknownSAE("no SAE is loaded")
                return next(iter(self.saes.values()))
            try:
                return self.saes[sae_id]
            except KeyError:
                known = ", ".join(self.saes) or "none"
                raise UnknownSAE(f"unknown SAE {sae_id!r}; loaded: {known}") from None

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.saes)

    def entries(self) -> list[SAEEntry]:
        with self._lock:
            return list(self.saes.values())

    # --- calls ----------------------------------------------------------------------------------------
    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call fn under the model lock in the current thread (for non-async callers)."""
        with self._lock:
            return fn(*args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) in a worker thread, one model call at a time; the event loop never blocks."""
        return await anyio.to_thread.run_sync(partial(self.run_sync, fn, *args, **kwargs),
                                              limiter=self._limiter())

    def _limiter(self) -> anyio.CapacityLimiter:
        # One limiter per event loop: an anyio limiter belongs to the loop it was made in.
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(1)
        return limiter
