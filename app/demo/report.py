"""The demo's validation report: does the SAE find the concepts we planted in the world?

For every concept, the single latent whose activity (pre > θ) best matches the concept's token labels by F1
on held-out labelled documents (special tokens excluded); the LM's validation loss beside a unigram baseline;
the SAE's L0, FVU and ΔLM loss (its eval.json); the colour-steering check; and, per explainer stored in the
index, the share of concept latents whose explanation names the concept (`app.demo.explain_check`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from app.demo.build_config import BuildConfig
from app.demo.concept_match import CooccurrenceCounter
from app.demo.layout import BundleLayout
from app.demo.lexicon import CONCEPTS, LEXICAL_CONCEPTS, STRUCTURAL_CONCEPTS
from app.demo.world import read_docs
from app.fsio import atomic_write_text

TARGETS = {"mean_lexical_f1": (">=", 0.8), "fvu": ("<=", 0.1), "l0": ("<=", 30.0), "steering_ratio": (">=", 3.0),
           "explained_lexical_share": (">=", 0.8)}
STEER_MULTIPLE = 2.0  # clamp the colour latent to this × its largest activation on the labelled documents


@torch.no_grad()
def match_concepts(lm, sae, docs, batch_size: int = 64, context_size: int | None = None
                   ) -> tuple[dict[str, Any], torch.Tensor]:
    """Best latent per concept over `docs` (labelled Documents), and every latent's max activation."""
    from app.demo.labels import label_batch
    from app.lm.hooks import capture, parse_hook_name

    kind, layer = parse_hook_name(sae.cfg.metadata["hook_name"])
    counter = CooccurrenceCounter(sae.d_sae, len(CONCEPTS))
    max_act = torch.zeros(sae.d_sae)
    for i in range(0, len(docs), batch_size):
        ids, attn, labels = label_batch(lm.tokenizer, docs[i:i + batch_size], CONCEPTS, max_length=context_size)
        h = capture(lm, ids, attn, kind, layer)
        keep = ~lm.special_mask(ids, attn)
        pre = sae.pre_acts(h[keep].to(sae.dtype))
        active = pre > sae.threshold
        counter.update(active.cpu(), labels[keep])
        max_act = torch.maximum(max_act, (pre * active).amax(0).float().cpu())
    return {name: m.to_json() for name, m in counter.best(CONCEPTS).items()}, max_act


def build_report(root: str | os.PathLike, lm=None, sae=None, cfg=None) -> dict[str, Any]:
    """Compute the report of a built bundle folder (`lm`/`sae` are loaded from it when not given)."""
    from app.demo.steering_check import steering_check

    layout = BundleLayout.at(root)
    if cfg is None:
        cfg = BuildConfig(**json.loads(layout.build_info.read_text())["config"])
    if lm is None:
        from app.lm import load_lm

        lm = load_lm(layout.model_dir, device="cpu")
    if sae is None:
        from app.sae import load_sae

        sae = load_sae(layout.sae_dir, device="cpu", dtype="float32")
    docs = read_docs(layout.eval_docs)
    concepts, max_act = match_concepts(lm, sae, docs, context_size=cfg.context_size)
    for name in concepts:
        concepts[name]["kind"] = "lexical" if name in LEXICAL_CONCEPTS else "structural"
    from app.demo.explain_check import explanation_shares

    index_db = layout.sae_index
    explanations = explanation_shares(index_db, concepts) if index_db.is_file() else {}
    lm_metrics = json.loads(layout.lm_metrics.read_text())
    sae_eval = json.loads(layout.sae_eval.read_text())
    colour = concepts["colour"]["latent"]
    value = STEER_MULTIPLE * float(max_act[colour]) if max_act[colour] > 0 else 4.0 * float(sae.threshold[colour])
    check = steering_check(lm, sae, colour, value, n_prompts=cfg.steer_prompts, max_new_tokens=cfg.steer_tokens,
                           seed=cfg.seed)
    report = {
        "concepts": concepts,
        "mean_lexical_f1": _mean(concepts[c]["f1"] for c in LEXICAL_CONCEPTS),
        "mean_structural_f1": _mean(concepts[c]["f1"] for c in STRUCTURAL_CONCEPTS),
        "l0": sae_eval.get("l0"),
        "fvu": sae_eval.get("fvu"),
        "delta_lm_loss": sae_eval.get("delta_lm_loss"),
        "ce_score": sae_eval.get("ce_score"),
        "lm_val_loss": lm_metrics["val_loss"],
        "unigram_loss": lm_metrics["unigram_loss"],
        "steering_ratio": check.ratio,
        "steering": check.to_json(),
        "labelled_tokens": sum(len(lm.token_ids(d.text)) - 1 for d in docs),
        "sae": {"d_sae": sae.d_sae, "hook_name": sae.cfg.metadata.get("hook_name")},
        "explanations": explanations,
        "explained_lexical_share": (explanations.get("builtin") or {}).get("lexical_share"),
    }
    report["targets"] = {k: {"op": op, "target": t, "met": _met(report.get(k), op, t)}
                         for k, (op, t) in TARGETS.items()}
    return report


def _mean(values) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else float("nan")


def _met(value, op: str, target: float) -> bool | None:
    if value is None:
        return None
    return bool(value >= target) if op == ">=" else bool(value <= target)


def save_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the report as JSON atomically (app.fsio; key order kept: the page lists concepts in report order)."""
    return atomic_write_text(path, json.dumps(report, indent=2))


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a saved report; FileNotFoundError with a hint when the demo has not been built."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no demo report yet; run `jumpscope demo build`")
    return json.loads(path.read_text())


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report for the terminal."""
    lines = [f"{'concept':<20} {'kind':<10} {'latent':>6} {'F1':>6} {'prec':>6} {'recall':>6} {'tokens':>7}"]
    for name, c in report["concepts"].items():
        lines.append(f"{name:<20} {c.get('kind', ''):<10} {c['latent']:>6} {c['f1']:>6.3f} {c['precision']:>6.3f} "
                     f"{c['recall']:>6.3f} {c.get('support', 0):>7}")
    s = report["steering"]

    def num(key: str) -> str:
        v = report.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    lines += [
        "",
        f"mean lexical F1     {num('mean_lexical_f1')}   (target >= 0.8)",
        f"mean structural F1  {num('mean_structural_f1')}",
        f"LM validation loss  {num('lm_val_loss')} nats   (unigram baseline {num('unigram_loss')})",
        f"SAE L0              {num('l0')}   (target <= 30)",
        f"SAE FVU             {num('fvu')}   (target <= 0.1)",
        f"SAE ΔLM loss        {num('delta_lm_loss')} nats",
        f"steering ratio      {num('steering_ratio')}   (target >= 3): colour share "
        f"{s['default_colour_share']:.3f} → {s['steered_colour_share']:.3f} clamping latent {s['latent']} "
        f"to {s['value']:.3g}",
    ]
    for name, e in (report.get("explanations") or {}).items():
        lex, struct = e.get("lexical_share"), e.get("structural_share")
        lines.append(f"explained ({name:<8}) lexical {'n/a' if lex is None else f'{lex:.2f}'}, structural "
                     f"{'n/a' if struct is None else f'{struct:.2f}'}   (concept latents whose explanation "
                     "names the concept; target lexical >= 0.8 for builtin)")
    return "\n".join(lines)
