"""What a training job is asked to do (the admin launch form / JSON body), validated, with paths confined.

`JobSpec` checks shapes and ranges; `JobSpec.confined(corpus_root)` then resolves every path against the
configured corpus root and refuses anything that lands outside it (`..`, absolute paths elsewhere, symlinks
that point out); a path outside the root gets the same answer whether it exists or not. `submit_problem()` says
what a spec still lacks to make a servable SAE (the web layer's 422). JobSpecError becomes a 400.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.lm.hooks import HOOK_KINDS, HookKind  # noqa: F401  (HOOK_KINDS re-exported for callers of the spec)
from app.training.auto import LONG_RUN_BATCH, default_target_l0
from app.training.config import TrainConfig
from app.training.options import field_help

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A Hugging Face hub id: "gpt2" or "org/name"; never a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# The smallest token budget of a job: one long-run batch (`train` itself accepts down to one auto batch).
MIN_TOKENS = LONG_RUN_BATCH
# Defaults and help texts shared with TrainConfig (its documented fields); the ranges are the job form's own.
_TRAIN = TrainConfig.__dataclass_fields__


class JobSpecError(ValueError):
    """A launch request that cannot be run as asked; the message says what to fix (HTTP 400)."""


MAX_SWEEP_RUNS = 16  # SAEs one sweep job may train


class SweepAxes(BaseModel):
    """A sweep job's lists (docs/training_sweeps.md): the cross product is trained from one LM pass."""

    model_config = ConfigDict(extra="forbid")

    layer: list[int] | None = Field(None, min_length=1, max_length=MAX_SWEEP_RUNS,
                                    description="layers of the hook (corpus jobs)")
    d_sae: list[int] | None = Field(None, min_length=1, max_length=MAX_SWEEP_RUNS, description="widths")
    target_l0: list[float] | None = Field(None, min_length=1, max_length=MAX_SWEEP_RUNS, description="target L0s")

    def lists(self) -> dict[str, list]:
        """The axes given, by TrainConfig field name."""
        return {k: v for k, v in (("layer", self.layer), ("d_sae", self.d_sae), ("target_l0", self.target_l0))
                if v is not None}


class JobSpec(BaseModel):
    """A training job: train from a text corpus through an LM hook, or from a cached activation file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="SAE folder name under data_dir/saes/ (default: job-<id>)"
    )
    model: str | None = Field(
        None, max_length=512, description="LM: a folder under the corpus root or a hub id (corpus jobs)"
    )
    hook: HookKind = Field(
        _TRAIN["hook"].default, description="hook kind the SAE reads (blocks.<layer>.hook_<kind>)"
    )
    layer: int = Field(0, ge=0, le=1024, description=field_help("layer"))
    d_sae: int = Field(..., ge=1, le=1 << 20, description=field_help("d_sae"))
    l0_coefficient: float | None = Field(None, ge=0, le=1e4, description="sparsity coefficient λ")
    target_l0: float | None = Field(None, gt=0, le=1e5, description="target L0 instead of a fixed λ")
    tokens: int = Field(..., ge=1, le=10**13, description=field_help("tokens"))
    corpus: str | None = Field(None, max_length=4096, description="text corpus path under the corpus root")
    activations: str | None = Field(
        None, max_length=4096, description="activation file (safetensors `activations` [N, d_in]) under the root"
    )
    context_size: int | None = Field(None, ge=2, le=1 << 17,
                                     description=field_help("context_size") + "; corpus jobs")
    index_tokens: int | None = Field(
        None, ge=1, le=10**12, description="tokens for the dashboard index after training (default min(tokens, 2^20))"
    )
    seed: int = Field(_TRAIN["seed"].default, ge=0, le=2**31 - 1, description=field_help("seed"))
    polish_share: float = Field(_TRAIN["polish_share"].default, ge=0, lt=1, description=field_help("polish_share"))
    sweep: SweepAxes | None = Field(None, description="lists of layers / widths / target L0s: one job trains "
                                    "their cross product from one LM pass, each SAE in <name>/<run>/")
    explainer: Literal["builtin"] | None = Field(
        None, description="label every latent after the index (`jumpscope explain`; builtin: no LLM, offline)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> JobSpec:
        if (self.corpus is None) == (self.activations is None):
            raise ValueError("give exactly one of 'corpus' (with 'model') or 'activations'")
        if self.corpus is not None and not self.model:
            raise ValueError("a corpus job needs 'model'")
        if self.l0_coefficient is not None and self.target_l0 is not None:
            raise ValueError("give either 'l0_coefficient' (λ) or 'target_l0', not both")
        if self.l0_coefficient is None and self.target_l0 is None:
            self.target_l0 = default_target_l0(self.d_sae)  # the trainer's own default, stated in the record
        if self.target_l0 is not None and self.target_l0 >= self.d_sae:
            raise ValueError(f"'target_l0' must be below d_sae ({self.d_sae}), got {self.target_l0}")
        if self.polish_share > 0 and self.target_l0 is None:
            raise ValueError("'polish_share' needs 'target_l0' (matching pursuit codes each token with that many rows)")
        if self.sweep is not None:
            if self.polish_share > 0:
                raise ValueError("'polish_share' does not run in a sweep yet; train each SAE on its own")
            self._check_sweep(self.sweep.lists())
        return self

    def _check_sweep(self, lists: dict[str, list]) -> None:
        if self.activations is not None and "layer" in lists:
            raise ValueError("a 'sweep' over layers needs a corpus job (an activation file holds one hook)")
        if "target_l0" in lists and self.l0_coefficient is not None:
            raise ValueError("a 'sweep' of target_l0 cannot go with 'l0_coefficient'")
        for key, values in lists.items():
            if len(set(values)) != len(values):
                raise ValueError(f"sweep.{key}: a value is repeated in {values}")
        if not all(1 <= d <= 1 << 20 for d in lists.get("d_sae", [])) or not all(
                0 <= x <= 1024 for x in lists.get("layer", [])):
            raise ValueError("sweep: d_sae must be in [1, 2^20] and layer in [0, 1024]")
        widths = lists.get("d_sae", [self.d_sae])
        for t in lists.get("target_l0", [self.target_l0] if self.target_l0 is not None else []):
            if not 0 < t < min(widths):
                raise ValueError(f"sweep: every target L0 must be in (0, d_sae={min(widths)}), got {t}")
        n = 1
        for values in lists.values():
            n *= len(values)
        if n > MAX_SWEEP_RUNS:
            raise ValueError(f"a sweep may train at most {MAX_SWEEP_RUNS} SAEs, this one {n}")

    def run_names(self) -> list[str]:
        """The sub-folder of each SAE of a sweep job ([] for a one-SAE job); app.training.sweep's names."""
        from app.training.sweep import expand, run_name

        lists = self.sweep.lists() if self.sweep is not None else {}
        varying = [k for k, v in lists.items() if len(v) > 1]
        if not varying:
            return []
        values = {"layer": self.layer, "hook": self.hook, "d_sae": self.d_sae, "target_l0": self.target_l0} | lists
        return [run_name(run, varying) for run in expand(values)]

    def submit_problem(self) -> str | None:
        """Why this spec cannot be queued as a new job (None when it can); checked at submit, not on stored records.

        The token budget must cover one training batch, and an activation-file job must name the LM, hook and
        layer its activations come from: they go into the SAE's cfg.json, without which it can never be served.
        """
        if self.tokens < MIN_TOKENS:
            return f"'tokens' must be at least one training batch ({MIN_TOKENS} tokens), got {self.tokens}"
        if self.activations is not None:
            missing = [f for f in ("model", "hook", "layer") if f not in self.model_fields_set or
                       getattr(self, f) is None]
            if missing:
                return ("an activation-file job must name the LM and hook its activations were taken from "
                        f"('model', 'hook' and 'layer'; missing: {', '.join(repr(f) for f in missing)}); "
                        "they are written to the SAE's cfg.json so the app can serve it")
        return None

    @property
    def kind(self) -> str:
        """"activations" or "corpus"."""
        return "activations" if self.activations is not None else "corpus"

    def confined(self, corpus_root: str | Path) -> JobSpec:
        """A copy whose corpus/activations/model paths are absolute and inside `corpus_root`.

        Raises JobSpecError for a path outside the root, one that does not exist, or a model that is
        neither a folder under the root nor a hub id.
        """
        update: dict[str, str] = {}
        if self.corpus is not None:
            update["corpus"] = str(confine_path(self.corpus, corpus_root, what="corpus"))
        if self.activations is not None:
            path = confine_path(self.activations, corpus_root, what="activation file")
            if not path.is_file():
                raise JobSpecError("activation file: not a file")
            update["activations"] = str(path)
        if self.model is not None:
            update["model"] = _confine_model(self.model, corpus_root)
        return self.model_copy(update=update)


def confine_path(value: str, root: str | Path, what: str = "path") -> Path:
    """Resolve `value` (absolute, or relative to `root`) and insist it exists inside `root`.

    Refuses `..` components outright (even when they would stay inside), and resolves symlinks before the
    containment check, so a link under the root that points elsewhere is refused too.
    """
    if not value or "\x00" in value:
        raise JobSpecError(f"{what}: empty or invalid path")
    p = Path(value).expanduser() if value.startswith("~") else Path(value)
    if ".." in p.parts:
        raise JobSpecError(f"{what}: '..' is not allowed in paths")
    root_real = Path(root).resolve()
    outside = JobSpecError(f"{what}: {value!r} is outside the corpus root")
    if p.is_absolute() and not (_lexically_inside(p, Path(root).absolute()) or _lexically_inside(p, root_real)):
        raise outside  # decided without touching the file system: says nothing about what exists out there
    candidate = p if p.is_absolute() else root_real / p
    try:
        real = candidate.resolve()  # follows the links that exist; a missing tail is kept as written
    except (OSError, RuntimeError) as e:  # symlink loops, permission problems
        raise JobSpecError(f"{what}: {value!r} cannot be resolved ({type(e).__name__})") from None
    if real != root_real and not real.is_relative_to(root_real):
        raise outside  # the same answer whether the target exists or not
    if not real.exists():
        raise JobSpecError(f"{what}: {value!r} does not exist under the corpus root")
    return real


def _lexically_inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _confine_model(model: str, root: str | Path) -> str:
    """A model given as a path must live under the root; a bare hub id passes through unchanged."""
    if model.startswith(("/", ".", "~")) or "\\" in model or os.path.lexists(Path(root) / model):
        return str(confine_path(model, root, what="model"))
    if _HUB_ID.match(model) and ".." not in model:
        return model
    raise JobSpecError(f"model: {model!r} is neither a folder under the corpus root nor a hub id")
