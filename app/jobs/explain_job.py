"""Explain jobs: label (and score) every latent of an SAE that already lives in data_dir/saes, as an admin job.

The job is one process, `jumpscope explain --sae DIR --progress-file F`; the runner reads F (done / total
latents) for the job's progress. Cancel stops the process like any job step; resume runs it again, and explain
skips what is already stored, so it continues where it stopped. The SAE folder is not the job's own: an
explain job never registers the SAE again and deleting its record never removes the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.commands import Step, jumpscope_cli
from app.jobs.spec import NAME_PATTERN

KIND = "explain"
PROGRESS_FILE = ".explain_progress.json"  # written by the explain CLI into the SAE folder


class ExplainJobSpec(BaseModel):
    """Explain the latents of an SAE folder under data_dir/saes/ (e.g. one a training job made)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["explain"] = Field(KIND, description="always 'explain'")
    sae: str = Field(..., pattern=NAME_PATTERN, description="SAE folder name under data_dir/saes/ (with index.db)")
    explainer: Literal["builtin"] = Field("builtin", description="builtin: no LLM, offline")
    latents: str | None = Field(None, max_length=2000, pattern=r"^[0-9][0-9,\- ]*$",
                                description="subset like 0-99,7 (default: all)")


def is_explain(spec: dict[str, Any]) -> bool:
    """Whether a stored job spec is an explain job's."""
    return spec.get("kind") == KIND


def explain_pipeline(spec: ExplainJobSpec, sae_dir: Path, *, python: str | None = None) -> list[Step]:
    """The one step of an explain job."""
    argv = jumpscope_cli(python) + ["explain", "--sae", str(sae_dir), "--explainer", spec.explainer,
                                    "--progress-file", str(sae_dir / PROGRESS_FILE)]
    if spec.latents:
        argv += ["--latents", spec.latents]
    return [Step("explain", "explaining", tuple(argv))]


def read_progress(sae_dir: str | Path) -> float | None:
    """The fraction done that the running explain step last wrote (None before the first write or if unreadable)."""
    try:
        data = json.loads((Path(sae_dir) / PROGRESS_FILE).read_text())
        done, total = int(data["done"]), int(data["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return min(1.0, done / total) if total > 0 else None
