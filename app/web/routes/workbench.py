"""The threshold workbench and SAE comparison (SPEC §9): what-if θ' for one latent, the sparsity dial, eval
metrics with intervals, and the /compare page. Model work runs in `Services.run` like every other route."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.sae import UnknownLatent
from app.web import latent_data
from app.web.deps import get_services
from app.web.public_names import scrub_paths
from app.web.rendering import render
from app.web.routes.pages import parse_float
from app.web.services import SAEEntry, Services, UnknownSAE
from app.workbench.compare import metrics_view
from app.workbench.dial import dial_curve, factor_for_l0
from app.workbench.registry import CACHES
from app.workbench.sample import SampleUnavailable
from app.workbench.whatif import UnknownLatentIndex, what_if

router = APIRouter(tags=["workbench"])

DEFAULT_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
MAX_FACTORS = 16
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown SAE or latent, or no eval.json"},
    409: {"description": "no held-out sample to score this SAE on (the detail says what to provide)"},
    422: {"description": "invalid request"},
}


class WhatIfRequest(BaseModel):
    """A new threshold θ' for one latent."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(..., ge=0, le=1e6, allow_inf_nan=False, description="θ' (≥ 0)")


class NearMiss(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    values: list[float] = Field(..., description="activations at θ' per token")
    pre: list[float] = Field(..., description="pre-activations per token")
    center: int
    max: float = Field(..., description="pre-activation at the centre (≤ θ')")


class WhatIfResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    threshold: float
    density: float
    l0_change: float
    fvu_change: float
    delta_lm_loss_change: float | None
    near_misses: list[NearMiss]


class DialRequest(BaseModel):
    """Scale every threshold by each factor (or find the factor for a target L0)."""

    model_config = ConfigDict(extra="forbid")
    factors: list[float] | None = Field(None, min_length=1, max_length=MAX_FACTORS)
    target_l0: float | None = Field(None, ge=0, allow_inf_nan=False)
    lm_loss: bool = True


def _public_sample(result: dict[str, Any]) -> dict[str, Any]:
    """The sample description without server paths."""
    sample = dict(result.get("sample") or {})
    corpus = sample.get("corpus")
    if isinstance(corpus, str) and not corpus.startswith("hf:"):
        sample["corpus"] = PurePath(corpus).name
    return {**result, "sample": sample}


def _what_if(services: Services, entry: SAEEntry, latent: int, threshold: float) -> dict[str, Any]:
    cache = CACHES.get(services.lm, entry.sae, entry.folder)
    return _public_sample(what_if(services.lm, entry.sae, cache, latent, threshold))


def _dial(services: Services, entry: SAEEntry, factors: list[float] | None, target_l0: float | None,
          lm_loss: bool) -> dict[str, Any]:
    cache = CACHES.get(services.lm, entry.sae, entry.folder)
    if target_l0 is not None:
        factors = [factor_for_l0(entry.sae, cache, target_l0)]
    curve = dial_curve(services.lm, entry.sae, cache, list(factors or DEFAULT_FACTORS), lm_loss)
    return _public_sample({"sae": entry.id, "baseline": cache.baseline(), "curve": curve,
                           "sample": {"tokens": cache.n_tokens, **cache.split}})


async def _run_sample(services: Services, fn, *args) -> dict[str, Any]:
    """Run a workbench call; missing samples are 409, bad latents 404 (messages without server paths)."""
    try:
        return await services.run(fn, services, *args)
    except SampleUnavailable as e:
        raise HTTPException(409, scrub_paths(str(e))) from None
    except UnknownLatentIndex as e:
        raise UnknownLatent(str(e)) from None


@router.post("/api/saes/{sae}/latents/{latent}/whatif", response_model=WhatIfResponse, responses=ERRORS)
async def whatif_api(sae: str, latent: int, body: WhatIfRequest, request: Request) -> dict[str, Any]:
    """Latent `latent` at θ': its density and the change in L0, FVU and ΔLM loss on the SAE's held-out sample,
    with the near misses below θ'."""
    services = get_services(request)
    entry = services.get(sae)
    latent_data.check_latent(entry, latent)
    return await _run_sample(services, _what_if, entry, latent, body.threshold)


@router.post("/api/saes/{sae}/dial", responses=ERRORS)
async def dial_api(sae: str, body: DialRequest, request: Request) -> dict[str, Any]:
    """The sparsity dial: L0, FVU and ΔLM loss with every θ scaled by each factor (nothing is saved; use
    `jumpscope dial --save` to write an edited SAE)."""
    if body.factors is not None and body.target_l0 is not None:
        raise HTTPException(422, "give factors or target_l0, not both")
    if body.factors is not None and not all(1e-4 <= f <= 1e4 for f in body.factors):
        raise HTTPException(422, "every factor must be between 1e-4 and 1e4")
    services = get_services(request)
    entry = services.get(sae)
    return await _run_sample(services, _dial, entry, body.factors, body.target_l0, body.lm_loss)


@router.get("/api/saes/{sae}/metrics", responses=ERRORS)
async def metrics_api(sae: str, request: Request) -> dict[str, Any]:
    """The SAE's evaluation (eval.json): each metric with its 95 % bootstrap interval (`<metric>_ci`) where
    recorded, the held-out split and the bootstrap settings."""
    entry = get_services(request).get(sae)
    view = metrics_view(entry.metrics)
    if view is None:
        raise HTTPException(404, f"SAE {entry.id!r} has no evaluation yet: run `jumpscope eval --sae <folder>`")
    return {"sae": entry.id, **view}


# --- pages ---------------------------------------------------------------------------------------------------
@router.get("/latents/{sae}/{latent}/whatif", include_in_schema=False)
async def whatif_partial(sae: str, latent: int, request: Request) -> Response:
    """The dashboard's what-if partial (#whatif) for ?threshold=θ'."""
    services = get_services(request)
    entry = services.get(sae)
    ctx: dict[str, Any] = {"sae_id": entry.id, "latent": latent, "w": None, "error": None, "pre_histogram": None}
    status = 200
    try:
        latent_data.check_latent(entry, latent)
        theta = parse_float(request.query_params.get("threshold"), "threshold", None, 0.0, 1e6)
        if theta is None:
            raise ValueError("give a threshold")
        ctx["w"] = await _run_sample(services, _what_if, entry, latent, theta)
        data = await services.run(latent_data.dashboard, services, entry, latent)
        ctx["pre_histogram"] = data.get("pre_histogram")
    except HTTPException as e:
        ctx["error"], status = e.detail, e.status_code
    except (ValueError, UnknownLatent, UnknownSAE) as e:
        ctx["error"], status = str(e), 404 if isinstance(e, UnknownLatent | UnknownSAE) else 422
    return render(request, "partials/_whatif.html", "partials/_whatif.html", ctx, status)


@router.get("/compare", include_in_schema=False)
async def compare_page(request: Request) -> Response:
    """Every loaded SAE on L0 vs ΔLM loss and L0 vs FVU (95 % intervals), a table of all metrics, and the
    sparsity-dial curve of one SAE overlaid (?dial=<sae>)."""
    services = get_services(request)
    rows = []
    for entry in services.entries():
        view = metrics_view(entry.metrics)
        rows.append({"id": entry.id, "hook": entry.hook, "d_sae": entry.sae.d_sae, "href": f"/latents/{entry.id}/0",
                     "m": view})
    ctx: dict[str, Any] = {"rows": rows, "curves": [], "dial_id": request.query_params.get("dial") or "",
                           "error": None}
    status = 200
    if ctx["dial_id"]:
        try:
            entry = services.get(ctx["dial_id"])
            result = await _run_sample(services, _dial, entry, None, None, True)
            ctx["curves"] = [{"id": entry.id, "points": result["curve"]}]
            ctx["dial"] = result
        except HTTPException as e:
            ctx["error"], status = e.detail, e.status_code
        except UnknownSAE as e:
            ctx["error"], status = str(e), 404
    points = [{"id": r["id"], "href": r["href"], **r["m"]} for r in rows if r["m"]]
    ctx["points"] = points
    return render(request, "compare.html", "compare.html", ctx, status)
