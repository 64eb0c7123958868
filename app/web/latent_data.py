"""Dashboard data for one latent: from the SAE's index DB (app.index.service) when there is one, otherwise
what the weights alone tell (threshold, logit effects, neighbours). Runs inside `Services.run`."""

from __future__ import annotations

import logging
import random
import sqlite3
from typing import Any

from app.encoding import latent_weights_summary
from app.explain import human as human_explanations
from app.index import service as index_service
from app.index.lazy_loss import ensure_loss_effects
from app.lm.hooks import hook_of
from app.sae import UnknownLatent
from app.steering import suggest_value
from app.web import explanations
from app.web.services import SAEEntry, Services

log = logging.getLogger(__name__)


def check_latent(entry: SAEEntry, latent: int) -> None:
    """UnknownLatent unless 0 ≤ latent < d_sae."""
    if not 0 <= latent < entry.sae.d_sae:
        raise UnknownLatent(f"latent {latent} does not exist in SAE {entry.id!r} (latents 0..{entry.sae.d_sae - 1})")


def dashboard(services: Services, entry: SAEEntry, latent: int) -> dict[str, Any]:
    """The dashboard dict of SPEC §5 / the index contract, with `indexed` saying where it came from."""
    check_latent(entry, latent)
    if entry.indexed:
        try:
            _ensure_loss_effects(services, entry, latent)
            data = dict(index_service.latent_dashboard(entry.index_db, latent))
        except index_service.IndexMissing:
            log.info("no index for %s; showing weight-only data", entry.id)
        except sqlite3.DatabaseError as e:  # a damaged index.db: say so once per request, serve the weights
            log.error("index of %s at %s is damaged (%s); showing weight-only data", entry.id, entry.index_db, e)
        except index_service.LatentNotFound as e:
            raise UnknownLatent(str(e)) from None
        else:
            data["indexed"] = True
            return with_explanations(entry, data)
    return with_explanations(entry, latent_weights_summary(services.lm, entry.sae, latent, entry.log10_density))


def _ensure_loss_effects(services: Services, entry: SAEEntry, latent: int) -> None:
    """Compute the latent's loss effects on its first view when the index left them lazy (app/index/lazy_loss.py).

    A failure here never hides the dashboard: it is logged and the status stays 'pending'."""
    try:
        ensure_loss_effects(entry.index_db, services.lm, entry.sae, hook_of(entry.sae), latent)
    except index_service.IndexMissing:
        pass  # the dashboard below says so
    except Exception:  # noqa: BLE001 — never hide the rest of the dashboard; the traceback goes to the log
        log.exception("loss effects of latent %d of %s could not be computed", latent, entry.id)


def with_explanations(entry: SAEEntry, data: dict[str, Any]) -> dict[str, Any]:
    """The dashboard plus `explanation_source` / `explanation_explainer` / `explanation_scores` (SPEC §9) and
    each neighbour's shown `explanation` (additive fields)."""
    data = {**data, **explanations.dashboard_fields(entry, int(data["latent"]))}
    neighbors = data.get("neighbors") or []
    texts = explanations.labels(entry, {int(n["latent"]) for n in neighbors})
    data["neighbors"] = [{**n, "explanation": texts.get(int(n["latent"]))} for n in neighbors]
    return data


def search(entry: SAEEntry, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Latents matching an index number, a top token or explanation text (index number only without an index),
    ranked by text match then explanation score (`explanations.rank_search`)."""
    query = query.strip()
    if entry.indexed:
        try:  # more candidates than shown, so the best text match and score can come first
            hits = list(index_service.search_latents(entry.index_db, query, min(1000, max(limit * 5, 100))))
        except (index_service.IndexMissing, sqlite3.DatabaseError):
            pass
        else:
            return explanations.rank_search(entry, query, hits, limit)
    if query.isdigit() and int(query) < entry.sae.d_sae:
        return [{"latent": int(query), "max": None, "density": None, "top_token": None, "explanation": None}]
    return []


def save_explanation(entry: SAEEntry, latent: int, text: str) -> None:
    """Store a latent's explanation in the SAE's index DB (ValueError without an index)."""
    check_latent(entry, latent)
    missing = ValueError(f"SAE {entry.id!r} has no index yet; run `jumpscope index` to enable explanations")
    if not entry.indexed:
        raise missing
    try:
        human_explanations.set_explanation(entry.index_db, latent, text.strip())
    except index_service.IndexMissing:
        raise missing from None
    except sqlite3.DatabaseError as e:
        raise ValueError(f"the index of SAE {entry.id!r} is damaged ({e}); rebuild it with `jumpscope index`") from None
    except index_service.LatentNotFound as e:
        raise UnknownLatent(str(e)) from None


def random_latent(entry: SAEEntry) -> int:
    """A random latent of the SAE (alive ones preferred when densities are known)."""
    dens = entry.log10_density
    if dens is not None:
        alive = [i for i, v in enumerate(dens.tolist()) if v > -10]
        if alive:
            return random.choice(alive)
    return random.randrange(entry.sae.d_sae)


def default_value(services: Services, entry: SAEEntry, latent: int, mode: str) -> float:
    """Default intervention strength: a multiple of the latent's max activation from the index if known."""
    check_latent(entry, latent)
    peak = None
    if entry.indexed and mode != "ablate":
        try:
            peak = index_service.latent_dashboard(entry.index_db, latent).get("max")
        except (index_service.IndexMissing, index_service.LatentNotFound, sqlite3.DatabaseError):
            peak = None
    return suggest_value(entry.sae, latent, mode, peak)
