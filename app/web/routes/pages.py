"""HTML pages. Each page route returns the full page, or only its result partial for an htmx request; the
same partial renders the first load and every update. Query strings hold all settings, so URLs can be shared.

Form values are parsed leniently here (not by FastAPI) so that a bad value shows a message inside the partial
instead of replacing it with an error page.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from app.encoding import encode_text
from app.explain.human import MAX_EXPLANATION
from app.lm.chat import has_chat_template
from app.sae import UnknownLatent
from app.steering import MODES, Intervention, ablation_effect, steer
from app.web import auth, explanations, latent_data
from app.web.deps import get_services, get_settings, get_templates
from app.web.rendering import render
from app.web.report import ReportUnavailable, report_context
from app.web.services import UnknownSAE

router = APIRouter(include_in_schema=False)

EXPECTED = (ValueError, UnknownLatent, UnknownSAE)


def status_of(exc: Exception) -> int:
    return 404 if isinstance(exc, UnknownLatent | UnknownSAE) else 422


def parse_int(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    """An integer form field within [lo, hi]; ValueError naming the field otherwise."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def parse_float(raw: str | None, name: str, default: float | None, lo: float, hi: float) -> float | None:
    """A finite float form field within [lo, hi] (blank = default)."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:  # also rejects NaN
        raise ValueError(f"{name} must be between {lo} and {hi}, got {raw}")
    return value


def parse_latents(values: list[str], limit: int) -> list[int]:
    """Latent indices from repeated `latent` fields, each possibly a comma/space separated list."""
    out: list[int] = []
    for raw in values:
        for part in raw.replace(",", " ").split():
            out.append(parse_int(part, "latent", 0, 0, 2**31))
    if len(out) > limit:
        raise ValueError(f"{len(out)} latents given; this server allows at most {limit}")
    return out


def chat_ctx(request: Request) -> dict[str, bool]:
    """`chat_available` (the model has a chat template: steer and inspect offer it) and `chat` (the box ticked)."""
    available = has_chat_template(get_services(request).lm)
    return {"chat_available": available, "chat": available and request.query_params.get("chat") in ("1", "on")}


# --- inspect -------------------------------------------------------------------------------------------
@router.get("/")
async def inspect_page(request: Request) -> Response:
    """Type a text → tokens coloured by activation, per-token latents, the prompt's top latents."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    text, sae_id = q.get("text", ""), q.get("sae") or None
    ctx: dict[str, Any] = {"text": text, "result": None, "error": None, "sae_id": sae_id, "labels": {},
                           "hidden": [], "max_density": None, **chat_ctx(request)}
    status = 200
    try:
        entry = services.get(sae_id)
        ctx["sae_id"] = entry.id
        top_k = parse_int(q.get("top_k"), "top_k", 16, 1, settings.max_top_k)
        # Dense-latent filter: hide latents whose density exceeds this level (blank: show all).
        ctx["max_density"] = parse_float(q.get("max_density"), "max_density", explanations.MAX_DENSITY_DEFAULT,
                                         0.0, 1.0)
        if text.strip():
            result = await services.run(encode_text, services.lm, entry.sae, text, top_k=top_k,
                                        max_tokens=settings.max_prompt_tokens, chat=ctx["chat"])
            ctx["result"], ctx["hidden"], ctx["labels"] = await services.run(
                explanations.annotate_encoding, entry, result, ctx["max_density"])
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    return render(request, "inspect.html", "partials/_inspect_result.html", ctx, status)


# --- latent dashboards ---------------------------------------------------------------------------------
@router.get("/latents")
async def latents_home(request: Request) -> Response:
    """The first SAE's latent 0."""
    entry = get_services(request).get(None)
    return RedirectResponse(f"/latents/{entry.id}/0", status_code=303)


@router.get("/latents/{sae}/random")
async def random_latent(sae: str, request: Request) -> Response:
    entry = get_services(request).get(sae)
    return RedirectResponse(f"/latents/{entry.id}/{latent_data.random_latent(entry)}", status_code=303)


@router.get("/latents/{sae}/search")
async def search_latents(sae: str, request: Request) -> Response:
    """Latents by index, top token or explanation (partial #search-results)."""
    services = get_services(request)
    entry = services.get(sae)
    query = request.query_params.get("q", "")[:200]
    results = await services.run(latent_data.search, entry, query) if query.strip() else []
    return render(request, "search.html", "partials/_search_results.html",
                  {"sae_id": entry.id, "query": query, "results": results})


@router.get("/latents/{sae}/{latent}")
async def dashboard_page(sae: str, latent: str, request: Request) -> Response:
    """Everything the index holds about one latent."""
    services = get_services(request)
    entry = services.get(sae)
    try:
        index = int(latent)
    except ValueError:
        raise HTTPException(404, f"{latent!r} is not a latent index") from None
    data = await services.run(latent_data.dashboard, services, entry, index)
    admin = auth.session_admin(request)  # only a logged-in admin sees the explanation form
    ctx = {"sae_id": entry.id, "entry": entry, "latent": index, "d": data, "d_sae": entry.sae.d_sae,
           "can_edit": admin is not None, "csrf": admin.csrf if admin else None}
    return render(request, "latent.html", "partials/_dashboard.html", ctx)


def _same_origin(request: Request) -> bool:
    """Extra CSRF guard for browser forms: an Origin/Referer present must be this host (the Host header itself is
    checked against settings.allowed_hosts by the TrustedHosts middleware)."""
    host = request.headers.get("host", "")
    for header in ("origin", "referer"):
        value = request.headers.get(header)
        if value:
            return urlsplit(value).netloc == host
    return True


@router.post("/latents/{sae}/{latent}/explanation")
async def save_explanation(sae: str, latent: int, request: Request,
                           who: Annotated[auth.AdminAuth, Depends(auth.require_admin)]) -> Response:
    """Save the latent's explanation in the index DB; answers the #explanation partial.

    Explanations are the product's labels, so writing one needs the admin: a bearer token, or the login session
    with its CSRF token (401/403 otherwise). The field is required (422 when missing; an empty value clears)."""
    if not _same_origin(request):
        raise HTTPException(403, "cross-site form submission refused")
    explanation = (await request.form()).get("explanation")
    if not isinstance(explanation, str):
        raise HTTPException(422, "the form has no explanation field (send an empty one to clear the explanation)")
    if len(explanation) > MAX_EXPLANATION:
        raise HTTPException(422, f"the explanation is {len(explanation)} characters; at most {MAX_EXPLANATION}")
    services = get_services(request)
    entry = services.get(sae)
    ctx: dict[str, Any] = {"sae_id": entry.id, "latent": latent, "explanation": explanation.strip(),
                           "saved": False, "error": None, "can_edit": True, "csrf": who.csrf}
    status = 200
    try:
        await services.run(latent_data.save_explanation, entry, latent, explanation)
        ctx["saved"] = True
        ctx["d"] = await services.run(explanations.dashboard_fields, entry, latent)
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    templates = get_templates(request)
    return templates.TemplateResponse(request, "partials/_explanation.html", ctx, status_code=status)


# --- steering ------------------------------------------------------------------------------------------
@router.get("/steer")
async def steer_page(request: Request) -> Response:
    """Pick latents and modes; default and steered completions side by side. Settings live in the URL."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    ctx: dict[str, Any] = {"prompt": q.get("prompt", ""), "result": None, "error": None, "rows": [], "labels": {},
                           "modes": MODES, "sae_id": q.get("sae") or None, "max_new_tokens": 32,
                           "temperature": 0.7, "seed": 0, "limits": settings, **chat_ctx(request)}
    status, push = 200, None
    try:
        entry = services.get(q.get("sae") or None)
        ctx["sae_id"] = entry.id
        ctx["max_new_tokens"] = parse_int(q.get("max_new_tokens"), "max_new_tokens", 32, 1, settings.max_new_tokens)
        ctx["temperature"] = parse_float(q.get("temperature"), "temperature", 0.7, 0.0, 10.0)
        ctx["seed"] = parse_int(q.get("seed"), "seed", 0, 0, 2**63 - 1)
        latents, modes, values = q.getlist("latent"), q.getlist("mode"), q.getlist("value")
        row_saes = q.getlist("latent_sae")  # each row's SAE (any loaded one); blank: the page's SAE
        if len(latents) > settings.max_interventions:
            raise ValueError(f"{len(latents)} interventions; this server allows at most {settings.max_interventions}")
        interventions, saes = [], {entry.id: entry.sae}
        for k, raw in enumerate(latents):
            if not raw.strip():
                continue
            latent = parse_int(raw, "latent", 0, 0, 2**31)
            mode = modes[k] if k < len(modes) and modes[k] in MODES else "clamp"
            row_entry = services.get(row_saes[k]) if k < len(row_saes) and row_saes[k] else entry
            saes[row_entry.id] = row_entry.sae
            value = parse_float(values[k] if k < len(values) else None, f"value of latent {latent}", None,
                                -1e5, 1e5)
            if value is None:
                value = await services.run(latent_data.default_value, services, row_entry, latent, mode)
            interventions.append(Intervention(latent, mode, value, sae=row_entry.id))
            ctx["rows"].append({"latent": latent, "mode": mode, "value": value, "sae": row_entry.id})
        wanted: dict[str, set[int]] = {}
        for row in ctx["rows"]:
            wanted.setdefault(row["sae"], set()).add(row["latent"])
        ctx["labels"] = await services.run(explanations.labels_by_sae, {i: services.get(i) for i in wanted}, wanted)
        if ctx["prompt"].strip():
            ctx["result"] = await services.run(
                steer, services.lm, saes, ctx["prompt"], interventions, max_new_tokens=ctx["max_new_tokens"],
                temperature=ctx["temperature"], seed=ctx["seed"], max_prompt_tokens=settings.max_prompt_tokens,
                chat=ctx["chat"])
        push = "/steer?" + urlencode(steer_query(ctx), doseq=True)
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    ctx["share_url"] = "/steer?" + urlencode(steer_query(ctx), doseq=True)
    return render(request, "steer.html", "partials/_steer_result.html", ctx, status, push_url=push)


def steer_query(ctx: dict[str, Any]) -> list[tuple[str, Any]]:
    """The canonical query string of a steer page (all settings, defaults resolved)."""
    items: list[tuple[str, Any]] = [("sae", ctx["sae_id"] or ""), ("prompt", ctx["prompt"])]
    for row in ctx["rows"]:
        items += [("latent", row["latent"]), ("mode", row["mode"]), ("value", row["value"]), ("latent_sae", row["sae"])]
    items += [("max_new_tokens", ctx["max_new_tokens"]), ("temperature", ctx["temperature"]),
              ("seed", ctx["seed"])]
    if ctx.get("chat"):
        items.append(("chat", 1))
    return items


# --- ablation ------------------------------------------------------------------------------------------
@router.get("/ablate")
async def ablate_page(request: Request) -> Response:
    """Per-token Δlog-prob of the actual next token when latents are ablated, and the most-moved tokens."""
    settings, services = get_settings(request), get_services(request)
    q = request.query_params
    ctx: dict[str, Any] = {"text": q.get("text", ""), "latents": [], "result": None, "error": None,
                           "sae_id": q.get("sae") or None, "labels": {}}
    status = 200
    try:
        entry = services.get(q.get("sae") or None)
        ctx["sae_id"] = entry.id
        ctx["latents"] = parse_latents(q.getlist("latent"), settings.max_interventions)
        ctx["labels"] = await services.run(explanations.labels, entry, ctx["latents"])
        if ctx["text"].strip() and ctx["latents"]:
            ctx["result"] = await services.run(ablation_effect, services.lm, entry.sae, ctx["text"],
                                               ctx["latents"], max_tokens=settings.max_prompt_tokens)
            deltas = [abs(d) for d in ctx["result"]["delta_logprob"] if d is not None]
            ctx["scale"] = max(deltas, default=0.0)
    except EXPECTED as e:
        ctx["error"], status = str(e), status_of(e)
    return render(request, "ablate.html", "partials/_ablate_result.html", ctx, status)


# --- demo report ---------------------------------------------------------------------------------------
@router.get("/report")
async def report_page(request: Request) -> Response:
    """The demo's validation report: headline figures against their targets, each concept's best latent."""
    settings, services = get_settings(request), get_services(request)
    try:
        ctx = await anyio.to_thread.run_sync(report_context, services, settings.demo_report)
    except ReportUnavailable as e:
        raise HTTPException(404, str(e)) from None
    return render(request, "report.html", "report.html", ctx)
