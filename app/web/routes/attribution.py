"""Across layers (SPEC §9): `POST /api/attribute` and its measured-ablation check, the `/attribute` page, and the
inspect page's layer × latent view (`/inspect/layers`, several SAEs through one LM pass).

Model work runs inside one `Services.run` call per request (attribution + explanations, or encode_many +
explanations), so the lock is taken once and the event loop never blocks.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from app.encoding import encode_many
from app.index.store import connect
from app.lm.hooks import parse_hook_name
from app.steering import BadTarget, attribute, measure_ablations
from app.web.deps import get_services, get_settings, get_templates
from app.web.rendering import render
from app.web.routes.api import ERRORS, check_limit
from app.web.routes.pages import EXPECTED, parse_float, parse_int, status_of
from app.web.schemas_attribution import AblationsRequest, AblationsResponse, AttributeRequest, AttributeResponse
from app.web.services import SAEEntry, Services, UnknownSAE

log = logging.getLogger(__name__)
router = APIRouter()

Target = int | str | None


# --- helpers -----------------------------------------------------------------------------------------------------
def selected(services: Services, ids: list[str] | None) -> list[SAEEntry]:
    """The named SAEs in order (UnknownSAE for an unknown id), or every loaded SAE when none is named."""
    if not ids:
        entries = services.entries()
        if not entries:
            raise UnknownSAE("no SAE is loaded")
        return entries
    return [services.get(i) for i in dict.fromkeys(ids)]


_DEPTH = {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}  # order within a block


def by_depth(entries: list[SAEEntry]) -> list[SAEEntry]:
    """The SAEs in the order the forward pass reaches their hooks (what a layer view lists top to bottom)."""
    def depth(e: SAEEntry) -> tuple[int, int]:
        kind, layer = parse_hook_name(e.hook)
        return layer, _DEPTH[kind]
    return sorted(entries, key=depth)


def sae_map(entries: list[SAEEntry]) -> dict[str, Any]:
    return {e.id: e.sae for e in entries}


def explanations(entry: SAEEntry, latents: set[int]) -> dict[int, str]:
    """Explanations of some latents from the SAE's index DB ({} without an index or when it is unreadable)."""
    if not latents or not entry.indexed:
        return {}
    try:
        conn = connect(entry.index_db, readonly=True)
        try:
            marks = ",".join("?" * len(latents))
            rows = conn.execute(f"SELECT latent, text FROM explanations WHERE latent IN ({marks})",
                                sorted(latents)).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        log.warning("no explanations for %s: %s", entry.id, e)
        return {}
    return {int(i): str(t) for i, t in rows}


def _explain(entries: list[SAEEntry], wanted: dict[str, set[int]]) -> dict[str, dict[int, str]]:
    return {e.id: explanations(e, wanted.get(e.id, set())) for e in entries}


# --- JSON API ----------------------------------------------------------------------------------------------------
@router.post("/api/attribute", response_model=AttributeResponse, responses=ERRORS, tags=["api"])
async def attribute_route(body: AttributeRequest, request: Request) -> dict[str, Any]:
    """Which latents drove a token: attribution = activation × ∂ log p(target at position) / ∂ latent for every
    active latent of every chosen SAE at every position up to the target (one backward pass, SAEs spliced in),
    plus each SAE's reconstruction-error node per position."""
    settings, services = get_settings(request), get_services(request)
    check_limit("top_k", body.top_k, settings.max_top_k)
    entries = selected(services, body.saes)
    try:
        return await services.run(attribute, services.lm, sae_map(entries), body.text, position=body.position,
                                  target_token=body.target_token, top_k=body.top_k, objective=body.objective,
                                  max_tokens=settings.max_prompt_tokens)
    except BadTarget as e:
        raise HTTPException(422, str(e)) from None


@router.post("/api/attribute/ablations", response_model=AblationsResponse, responses=ERRORS, tags=["api"])
async def ablations_route(body: AblationsRequest, request: Request) -> dict[str, Any]:
    """The honesty check of attribution rows: the measured Δ objective when each node alone is ablated at its
    position (clamp to 0, SPEC §4), the target fixed as in `/api/attribute`."""
    settings, services = get_settings(request), get_services(request)
    check_limit("the number of nodes", len(body.nodes), settings.max_top_k)
    entries = selected(services, [n.sae for n in body.nodes])
    nodes = [(n.sae, n.latent, n.position) for n in body.nodes]
    try:
        return await services.run(measure_ablations, services.lm, sae_map(entries), body.text, nodes,
                                  position=body.position, target_token=body.target_token,
                                  objective=body.objective, max_tokens=settings.max_prompt_tokens)
    except BadTarget as e:
        raise HTTPException(422, str(e)) from None


# --- pages -------------------------------------------------------------------------------------------------------
def _attribution_view(services: Services, entries: list[SAEEntry], text: str, position: int | None,
                      target: Target, top_k: int, max_tokens: int) -> dict[str, Any]:
    """The attribution answer plus what the page shows beside it (explanations, heat scales, hooks)."""
    result = attribute(services.lm, sae_map(entries), text, position=position, target_token=target, top_k=top_k,
                       max_tokens=max_tokens)
    wanted: dict[str, set[int]] = {}
    for row in result["attributions"]:
        wanted.setdefault(row["sae"], set()).add(row["latent"])
    result["explanations"] = _explain(entries, wanted)
    totals = [abs(v) for part in result["per_sae"].values() for v in part["position_totals"]]
    result["heat_scale"] = max(totals, default=0.0)
    errors: dict[str, list[float]] = {e.id: [0.0] * len(result["tokens"]) for e in entries}
    for row in result["error_attributions"]:
        errors[row["sae"]][row["position"]] = row["attribution"]
    result["error_rows"] = errors
    result["error_scale"] = max((abs(v) for row in errors.values() for v in row), default=0.0)
    return result


def _page_target(q) -> Target:
    """`target_id` (a token id, from the page's links) wins over `target` (the text of one token)."""
    raw_id = q.get("target_id", "").strip()
    if raw_id:
        return parse_int(raw_id, "target_id", 0, 0, 2**31)
    return q.get("target") or None


@router.get("/attribute", include_in_schema=False)
async def attribute_page(request: Request) -> Response:
    """Type a text; see which latents (of every chosen SAE) drove the model's next token, ranked, with token heat
    per layer and, on request, the measured effect of ablating each top latent."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    text = q.get("text", "")
    ctx: dict[str, Any] = {"text": text, "result": None, "error": None, "chosen": q.getlist("sae"),
                           "position": q.get("position", ""), "target": q.get("target", ""), "top_k": 32}
    status = 200
    try:
        entries = by_depth(selected(services, ctx["chosen"]))
        ctx["chosen"] = [e.id for e in entries]
        ctx["hooks"] = {e.id: e.hook for e in entries}
        ctx["top_k"] = parse_int(q.get("top_k"), "top_k", 32, 1, settings.max_top_k)
        position = parse_int(q.get("position"), "position", -1, 0, 2**31)
        if text.strip():
            ctx["result"] = await services.run(_attribution_view, services, entries, text,
                                               None if position < 0 else position, _page_target(q), ctx["top_k"],
                                               settings.max_prompt_tokens)
            r = ctx["result"]
            fixed = [("text", text), *(("sae", s) for s in ctx["chosen"]), ("position", r["position"])]
            ctx["base_query"] = [*fixed, ("target_id", r["target_token"])]
            ctx["next_href"] = {n["token_id"]: "/attribute?" + urlencode([*fixed, ("target_id", n["token_id"]),
                                                                         ("top_k", ctx["top_k"])])
                                for n in r["top_next"]}
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    ctx["urlencode"] = urlencode
    return render(request, "attribute.html", "partials/_attribute_result.html", ctx, status)


@router.get("/attribute/measure", include_in_schema=False)
async def measure_partial(request: Request) -> Response:
    """The htmx honesty check of one row: measured Δ log p(target) when the latent is ablated at its position."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    ctx: dict[str, Any] = {"error": None, "row": None}
    status = 200
    try:
        entry = services.get(q.get("sae") or None)
        latent = parse_int(q.get("latent"), "latent", 0, 0, 2**31)
        at = parse_int(q.get("at"), "at", 0, 0, 2**31)
        position = parse_int(q.get("position"), "position", -1, 0, 2**31)
        attribution = parse_float(q.get("attribution"), "attribution", None, -1e30, 1e30)
        out = await services.run(measure_ablations, services.lm, {entry.id: entry.sae}, q.get("text", ""),
                                 [(entry.id, latent, at)], position=None if position < 0 else position,
                                 target_token=_page_target(q), max_tokens=settings.max_prompt_tokens)
        ctx["row"] = {**out["ablations"][0], "estimate": None if attribution is None else -attribution}
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    templates = get_templates(request)
    return templates.TemplateResponse(request, "partials/_attribute_measure.html", ctx, status_code=status)


def _layers_view(services: Services, entries: list[SAEEntry], text: str, token: int | None, top_k: int,
                 max_tokens: int) -> dict[str, Any]:
    """encode_many over the SAEs (one LM pass), with the selected token's latents and explanations per SAE."""
    result = encode_many(services.lm, sae_map(entries), text, top_k=top_k, max_tokens=max_tokens)
    if token is not None and not 0 <= token < len(result["tokens"]):
        raise ValueError(f"token {token} is outside the prompt's tokens 0..{len(result['tokens']) - 1}")
    wanted: dict[str, set[int]] = {}
    for e in entries:
        part = result["per_sae"][e.id]
        rows = part["latents_per_token"][token] if token is not None else []
        wanted[e.id] = {r["latent"] for r in rows} | {t["latent"] for t in part["top_latents"]}
    result["explanations"] = _explain(entries, wanted)
    result["token"] = token
    return result


@router.get("/inspect/layers", include_in_schema=False)
async def layers_partial(request: Request) -> Response:
    """The inspect page's layer × latent view: for the selected token, each loaded SAE's active latents (value,
    margin, explanation); for the prompt, each SAE's top latents. Every hook from one LM pass."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    ctx: dict[str, Any] = {"error": None, "layers": None, "text": q.get("text", "")}
    status = 200
    try:
        entries = by_depth(selected(services, q.getlist("sae")))
        ctx["hooks"] = {e.id: e.hook for e in entries}
        top_k = parse_int(q.get("top_k"), "top_k", 16, 1, settings.max_top_k)
        token = parse_int(q.get("token"), "token", -1, 0, 2**31)
        if ctx["text"].strip():
            ctx["layers"] = await services.run(_layers_view, services, entries, ctx["text"],
                                               None if token < 0 else token, top_k, settings.max_prompt_tokens)
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    templates = get_templates(request)
    return templates.TemplateResponse(request, "partials/_layers.html", ctx, status_code=status)

