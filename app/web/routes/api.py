"""The JSON API of SPEC §8. Handlers validate limits, then hand a service function to `Services.run`."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request

from app.encoding import encode_many, encode_text
from app.steering import Intervention, ablation_effect, steer
from app.web import explanations, latent_data
from app.web.deps import get_services, get_settings
from app.web.public_names import failed_saes, model_label
from app.web.report import ReportUnavailable, load_report
from app.web.schemas import (
    AblateRequest,
    AblateResponse,
    Dashboard,
    EncodeRequest,
    EncodeResponse,
    Health,
    SAEInfo,
    SteerRequest,
    SteerResponse,
)
from app.web.settings import Settings

router = APIRouter(prefix="/api", tags=["api"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input (the detail says what to fix)"},
    404: {"description": "unknown SAE or latent"},
    413: {"description": "request body too large"},
    422: {"description": "invalid request or over a limit"},
}


def check_limit(name: str, value: int, limit: int) -> None:
    """422 with a clear message when a request asks for more than the server allows."""
    if value > limit:
        raise HTTPException(422, f"{name} is {value}; this server allows at most {limit}")


@router.get("/health", response_model=Health)
async def health(request: Request) -> dict[str, Any]:
    """Liveness plus what is loaded: SAE ids and the model's name, never a server path (failed SAEs by folder
    name; the full paths are in the server log)."""
    services = get_services(request)
    return {"status": "ok", "model": model_label(services.lm.name), "device": str(services.lm.device),
            "saes": services.ids(), "failed_saes": failed_saes(dict(getattr(services, "failed", {})))}


@router.get("/saes", response_model=list[SAEInfo])
async def list_saes(request: Request) -> list[dict[str, Any]]:
    """Every loaded SAE with its hook, widths and evaluation metrics."""
    return [{**s, "model_name": model_label(s.get("model_name"))} for s in
            (e.summary() for e in get_services(request).entries())]


@router.post("/encode", response_model=EncodeResponse, responses=ERRORS)
async def encode(body: EncodeRequest, request: Request) -> dict[str, Any]:
    """Tokens of the text with their active latents (value and margin above θ) and the prompt's top latents."""
    settings, services = get_settings(request), get_services(request)
    check_limit("top_k", body.top_k, settings.max_top_k)
    entry = services.get(body.sae)
    if body.saes is None:
        result = await services.run(encode_text, services.lm, entry.sae, body.text, top_k=body.top_k,
                                    max_tokens=settings.max_prompt_tokens, chat=body.chat)
        return {**await services.run(explained, entry, result), "sae": entry.id}
    # Several SAEs: one LM pass for all of them (and the `sae` whose fields stay at the top level).
    named = list(dict.fromkeys(body.saes))
    saes = {e.id: e.sae for e in (services.get(i) for i in dict.fromkeys([entry.id, *named]))}
    result = await services.run(encode_many, services.lm, saes, body.text, top_k=body.top_k,
                                max_tokens=settings.max_prompt_tokens, chat=body.chat)
    per_sae = result.pop("per_sae")
    per_sae = {i: await services.run(explained, services.get(i), part) for i, part in per_sae.items()}
    main = {k: v for k, v in per_sae[entry.id].items() if k != "hook"}
    return {**result, **main, "sae": entry.id, "per_sae": {i: per_sae[i] for i in named}}


def explained(entry: Any, part: dict[str, Any]) -> dict[str, Any]:
    """An encoding with each listed latent's shown `explanation` (null when it has none)."""
    texts = explanations.labels(entry, {x["latent"] for row in part["latents_per_token"] for x in row}
                                | {t["latent"] for t in part["top_latents"]})
    return {**part, "latents_per_token": [[{**x, "explanation": texts.get(x["latent"])} for x in row]
                                          for row in part["latents_per_token"]],
            "top_latents": [{**t, "explanation": texts.get(t["latent"])} for t in part["top_latents"]]}


@router.get("/saes/{sae}/latents/{latent}", response_model=Dashboard, responses=ERRORS)
async def latent_dashboard(sae: str, latent: int, request: Request) -> dict[str, Any]:
    """The latent's dashboard (from the index; weight-only fields when the SAE is not indexed)."""
    services = get_services(request)
    entry = services.get(sae)
    return await services.run(latent_data.dashboard, services, entry, latent)


def interventions_of(items: list, settings: Settings) -> list[Intervention]:
    """Validated Intervention objects, within the server's intervention limit."""
    check_limit("the number of interventions", len(items), settings.max_interventions)
    return [Intervention(latent=i.latent, mode=i.mode, value=i.value, sae=i.sae) for i in items]


@router.post("/steer", response_model=SteerResponse, responses=ERRORS)
async def steer_route(body: SteerRequest, request: Request) -> dict[str, Any]:
    """Default and steered completions side by side, same seed and sampling settings."""
    settings, services = get_settings(request), get_services(request)
    check_limit("max_new_tokens", body.max_new_tokens, settings.max_new_tokens)
    interventions = interventions_of(body.interventions, settings)
    entry = services.get(body.sae)
    # The request's SAE first (interventions naming no SAE use it), then every SAE an intervention names.
    ids = dict.fromkeys([entry.id, *(iv.sae for iv in interventions if iv.sae is not None)])
    saes = {e.id: e.sae for e in (services.get(i) for i in ids)}
    result = await services.run(steer, services.lm, saes, body.prompt, interventions,
                                max_new_tokens=body.max_new_tokens, temperature=body.temperature, seed=body.seed,
                                top_k=body.top_k, max_prompt_tokens=settings.max_prompt_tokens, chat=body.chat)
    return {**result.to_json(), "sae": entry.id}


@router.post("/ablate", response_model=AblateResponse, responses=ERRORS)
async def ablate(body: AblateRequest, request: Request) -> dict[str, Any]:
    """Per-token Δlog-prob of each actual next token when the latents are ablated, and the most-moved tokens."""
    settings, services = get_settings(request), get_services(request)
    check_limit("the number of latents", len(body.latents), settings.max_interventions)
    entry = services.get(body.sae)
    result = await services.run(ablation_effect, services.lm, entry.sae, body.text, body.latents,
                                top_n=body.top_n, max_tokens=settings.max_prompt_tokens)
    texts = await services.run(explanations.labels, entry, body.latents)
    return {**result, "sae": entry.id, "explanations": texts}


@router.get("/report", responses={404: {"description": "no demo report configured, or its file is missing or "
                                                      "unreadable"}})
async def demo_report(request: Request) -> dict[str, Any]:
    """The embedded demo's validation report (report.json of `jumpscope demo build`) as written."""
    try:
        return await anyio.to_thread.run_sync(load_report, get_settings(request).demo_report)
    except ReportUnavailable as e:
        raise HTTPException(404, str(e)) from None
