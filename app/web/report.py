"""The embedded demo's validation report for the web app: read report.json safely and shape it for the page.

The report is written by `jumpscope demo build` (app.demo.report). The web layer only reads it: a missing,
unreadable or malformed file is `ReportUnavailable` (the routes answer 404 with its message), never a 500.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from app.demo.layout import SAE_DIR as BUNDLE_SAE_DIR  # the SAE folder beside report.json in a demo bundle
from app.demo.report import TARGETS
from app.web.services import SAEEntry, Services

MAX_REPORT_BYTES = 16 * 1024 * 1024  # a real report is a few kB; refuse to parse anything absurd
KIND_ORDER = {"lexical": 0, "structural": 1}  # lexical concepts first on the page


class ReportUnavailable(LookupError):
    """No report is configured, or the file is missing, unreadable or not a report."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no demo report"


def load_report(path: Path | None) -> dict[str, Any]:
    """The report JSON as a dict. NaN/Infinity in the file become null so the API can always answer it."""
    if path is None:
        raise ReportUnavailable("no demo report is configured (it is shown when `jumpscope serve` runs the demo)")
    path = Path(path)
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise ReportUnavailable(f"demo report {path.name} is larger than {MAX_REPORT_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except FileNotFoundError:
        raise ReportUnavailable(f"no demo report at {path.name}; run `jumpscope demo build`") from None
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ReportUnavailable(f"demo report {path.name} is unreadable ({type(e).__name__}); "
                                "rebuild it with `jumpscope demo build`") from None
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), dict):
        raise ReportUnavailable(f"demo report {path.name} has no `concepts` table; "
                                "rebuild it with `jumpscope demo build`")
    return data


def _num(value: Any) -> float | None:
    """A finite number from the report, or None (a malformed field shows as '—' instead of failing)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _latent(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def report_sae(services: Services, path: Path, report: dict[str, Any]) -> SAEEntry | None:
    """The loaded SAE the report describes: the bundle's SAE folder beside report.json, else the one SAE whose
    width and hook match the report's `sae` block; None when neither identifies one."""
    folder = (Path(path).parent / BUNDLE_SAE_DIR).resolve()
    entries = services.entries()
    for entry in entries:
        if entry.folder == folder:
            return entry
    meta = report.get("sae") if isinstance(report.get("sae"), dict) else {}
    matches = [e for e in entries if meta and e.sae.d_sae == meta.get("d_sae") and e.hook == meta.get("hook_name")]
    return matches[0] if len(matches) == 1 else None


def _check(value: float | None, op: str, target: float) -> bool | None:
    if value is None:
        return None
    return value >= target if op == ">=" else value <= target


def report_targets(report: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """(op, threshold) per headline figure: the report's own `targets` (what it was built against), and for a
    figure it has none for, the demo's `TARGETS` (app.demo.report) — the one home of these numbers."""
    out = dict(TARGETS)
    given = report.get("targets")
    for key, t in (given.items() if isinstance(given, dict) else ()):
        if isinstance(t, dict) and t.get("op") in (">=", "<=") and _num(t.get("target")) is not None:
            out[key] = (t["op"], float(t["target"]))
    return out


def _shown(op: str, target: float) -> str:
    """'≥ 0.8', '≤ 30'."""
    return f"{'≥' if op == '>=' else '≤'} {target:g}"


def _ci(report: dict[str, Any], metrics: dict[str, Any] | None, key: str) -> list[float] | None:
    """The 95 % bootstrap interval of an eval figure: the report's own `<key>_ci`, else the SAE's eval.json one
    when that file gives the same value (the report copied it from there)."""
    for source in (report, metrics or {}):
        ci = source.get(f"{key}_ci")
        if source is not report and _num(source.get(key)) != _num(report.get(key)):
            continue
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(_num(v) is not None for v in ci):
            return [float(ci[0]), float(ci[1])]
    return None


def summary_rows(report: dict[str, Any], metrics: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Headline figures with their targets (issue 5) and whether each is met (None: no target or no value); the
    evaluation figures carry their 95 % interval (`ci`) where the report or the SAE's eval.json has one."""
    g = {k: _num(report.get(k)) for k in ("mean_lexical_f1", "mean_structural_f1", "l0", "fvu",
                                          "delta_lm_loss", "steering_ratio", "lm_val_loss", "unigram_loss")}
    t = report_targets(report)
    return [*_headline_rows(report, metrics, g, t), *explanation_rows(report, t)]


def explanation_rows(report: dict[str, Any], t: dict[str, tuple[str, float]]) -> list[dict[str, Any]]:
    """Per explainer in the report (app.demo.explain_check): the share of lexical / structural concepts whose
    latent's explanation names the concept; the built-in explainer's lexical share has the report's target."""
    rows = []
    explanations = report.get("explanations")
    for name, e in sorted(explanations.items() if isinstance(explanations, dict) else ()):
        if not isinstance(e, dict):
            continue
        lex, struct = _num(e.get("lexical_share")), _num(e.get("structural_share"))
        target = t.get("explained_lexical_share") if name == "builtin" else None
        rows.append({"label": f"Lexical concepts named by explanations ({name})", "value": lex,
                     "target": _shown(*target) if target else "", "met": _check(lex, *target) if target else None})
        rows.append({"label": f"Structural concepts named by explanations ({name})", "value": struct, "target": "",
                     "met": None})
    return rows


def _headline_rows(report: dict[str, Any], metrics: dict[str, Any] | None, g: dict[str, float | None],
                   t: dict[str, tuple[str, float]]) -> list[dict[str, Any]]:
    l0_ok, fvu_ok = _check(g["l0"], *t["l0"]), _check(g["fvu"], *t["fvu"])
    fvu_met = None if l0_ok is None or fvu_ok is None else (l0_ok and fvu_ok)
    beats = None if g["lm_val_loss"] is None or g["unigram_loss"] is None else g["lm_val_loss"] < g["unigram_loss"]
    return [
        {"label": "Mean lexical F1", "value": g["mean_lexical_f1"], "target": _shown(*t["mean_lexical_f1"]),
         "met": _check(g["mean_lexical_f1"], *t["mean_lexical_f1"])},
        {"label": "Mean structural F1", "value": g["mean_structural_f1"], "target": "", "met": None},
        {"label": "SAE L0", "value": g["l0"], "target": _shown(*t["l0"]), "met": l0_ok,
         "ci": _ci(report, metrics, "l0")},
        {"label": "SAE FVU", "value": g["fvu"], "target": f"{_shown(*t['fvu'])} at L0 {_shown(*t['l0'])}",
         "met": fvu_met, "ci": _ci(report, metrics, "fvu")},
        {"label": "SAE ΔLM loss (nats)", "value": g["delta_lm_loss"], "target": "", "met": None,
         "ci": _ci(report, metrics, "delta_lm_loss")},
        {"label": "Steering ratio", "value": g["steering_ratio"], "target": _shown(*t["steering_ratio"]),
         "met": _check(g["steering_ratio"], *t["steering_ratio"])},
        {"label": "LM validation loss (nats)", "value": g["lm_val_loss"],
         "target": f"< unigram baseline {g['unigram_loss']:.3g}" if g["unigram_loss"] is not None else "",
         "met": beats},
    ]


def concept_rows(report: dict[str, Any], entry: SAEEntry | None) -> list[dict[str, Any]]:
    """One row per concept, lexical first (report order within a kind); `href` is the best latent's dashboard
    when the SAE is loaded and the latent is in range."""
    rows = []
    for name, c in report["concepts"].items():
        c = c if isinstance(c, dict) else {}
        kind = c.get("kind") if isinstance(c.get("kind"), str) else ""
        latent = _latent(c.get("latent"))
        href = (f"/latents/{entry.id}/{latent}" if entry is not None and latent is not None
                and latent < entry.sae.d_sae else None)
        rows.append({"name": str(name), "kind": kind, "latent": latent, "href": href, "f1": _num(c.get("f1")),
                     "precision": _num(c.get("precision")), "recall": _num(c.get("recall")),
                     "support": _latent(c.get("support"))})
    rows.sort(key=lambda r: KIND_ORDER.get(r["kind"], len(KIND_ORDER)))  # stable: keeps report order
    return rows


def steering_view(report: dict[str, Any], entry: SAEEntry | None, limit: int = 4) -> dict[str, Any] | None:
    """The colour-steering check (latent, value, colour shares, a few example generations), or None."""
    s = report.get("steering")
    if not isinstance(s, dict):
        return None
    latent = _latent(s.get("latent"))
    examples = [e for e in s.get("examples") or [] if isinstance(e, dict)][:limit]
    return {"latent": latent, "value": _num(s.get("value")),
            "href": f"/latents/{entry.id}/{latent}" if entry is not None and latent is not None
            and latent < entry.sae.d_sae else None,
            "default_share": _num(s.get("default_colour_share")), "steered_share": _num(s.get("steered_colour_share")),
            "examples": [{k: str(e.get(k, "")) for k in ("prompt", "default", "steered")} for e in examples]}


def report_context(services: Services, path: Path | None) -> dict[str, Any]:
    """Everything report.html needs (ReportUnavailable when there is no readable report)."""
    report = load_report(path)
    entry = report_sae(services, Path(path), report)
    return {"summary": summary_rows(report, entry.metrics if entry else None), "concepts": concept_rows(report, entry),
            "steering": steering_view(report, entry), "report_sae": entry.id if entry else None}
