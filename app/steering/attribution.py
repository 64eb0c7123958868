"""Which latents drove a token: attribution of log p(target) to every active latent of several SAEs (SPEC §9).

The SAEs are spliced in at their hooks: h' = decode(f) + err with f = encode(h) and err = h − decode(f), so every
active latent (sae, latent, position) and every hook's reconstruction error at every position is a node, and the
forward values are the clean model's (log p(target) is unchanged). One backward pass from the objective gives
g = ∂ objective / ∂h' at every hook; through the splice ∂/∂f_i = d_i · g (d_i = W_dec[i]) and ∂/∂err = g, so

    attribution(sae, i, t) = f_i(t) · (d_i · g(t))        error attribution(sae, t) = err(t) · g(t)

(at each hook the latents, b_dec and err add up to h · g). Gradients pass through every hook as the identity
(f and err together carry all of h), so an attribution is the first-order estimate of what the latent's presence
adds to the objective: ablating it (clamp to 0, SPEC §4) changes the objective by −attribution to first order,
exactly so when everything after the hook is linear. `ablation_deltas` measures that change, for the honesty
check beside each estimate. Special positions (BOS) are no nodes: nothing is ever edited there.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app.encoding.encode import prompt_ids, sae_latents
from app.lm.hooks import hook_name, hook_of, intervene_many
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.steering.interventions import (
    Intervention,
    check_interventions,
    intervention_delta,
    sae_set,
)

OBJECTIVES = ("logprob", "logit")  # log p(target), or the target's raw logit (linear in the last hook)
Node = tuple[str, int, int]  # (sae name, latent, position)


class BadTarget(ValueError):
    """A position or target token outside the prompt / vocabulary (the web layer answers 422)."""


@dataclass
class SAEAttribution:
    """One SAE's nodes at positions 0..P: activations, latent and error attributions (on the CPU)."""

    hook: str
    f: torch.Tensor  # [P+1, d_sae] latent activations (0 at special positions), float32 or wider
    attribution: torch.Tensor  # [P+1, d_sae] f · ∂objective/∂f (0 where f = 0)
    error: torch.Tensor  # [P+1] err · ∂objective/∂err (0 at special positions)


@dataclass
class Attribution:
    """Everything one attribution pass computed."""

    ids: list[int]  # the prompt up to and including the target position
    position: int
    target: int  # the token id whose (log-)probability is attributed
    logprob: float  # log p(target | ids[:position+1]) of the clean model
    objective: str
    value: float  # the attributed quantity (logprob, or the target's logit)
    top_next: list[tuple[int, float]]  # the model's most likely next tokens with their log-probs
    saes: dict[str, SAEAttribution]


def _keep_last_logits(model: torch.nn.Module) -> dict[str, int]:
    """`logits_to_keep=1` where the model's forward takes it (only the last position's logits are computed)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32 at least (a float64 model keeps float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _objective(logits: torch.Tensor, target: int, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, log-probs) from the last position's logits [B, V]: the objective per row [B]."""
    logits = _wide(logits)
    logp = torch.log_softmax(logits, dim=-1)
    value = logp[:, target] if objective == "logprob" else logits[:, target]
    return value, logp


def resolve_target(lm: LanguageModel, ids: list[int], position: int | None,
                   target_token: int | str | None) -> tuple[int, int | None]:
    """(position, target id or None for the model's top token); BadTarget when out of range."""
    pos = len(ids) - 1 if position is None else position
    if not 0 <= pos < len(ids):
        raise BadTarget(f"position {pos} is outside the prompt's tokens 0..{len(ids) - 1}")
    if target_token is None:
        return pos, None
    if isinstance(target_token, str):
        tok = lm.tokenizer(target_token, add_special_tokens=False)["input_ids"]
        if len(tok) != 1:
            raise BadTarget(f"the target {target_token!r} is {len(tok)} tokens; give one token (or its id)")
        return pos, int(tok[0])
    vocab = int(lm.model.get_output_embeddings().weight.shape[0])
    if not 0 <= target_token < vocab:
        raise BadTarget(f"target token {target_token} is outside the vocabulary 0..{vocab - 1}")
    return pos, int(target_token)


def attribute_ids(lm: LanguageModel, saes: Mapping[str, JumpReLUSAE], ids: list[int], position: int | None = None,
                  target_token: int | str | None = None, objective: str = "logprob") -> Attribution:
    """Attribution of the target at `position` (default: the last token; target default: the model's top next
    token there) to every active latent and error node of every SAE, from one forward and one backward pass."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    saes = sae_set(saes)
    pos, target = resolve_target(lm, ids, position, target_token)
    ids = ids[: pos + 1]  # a causal LM: later tokens cannot change this prediction
    names = {key: hook_name(*hook_of(sae)) for key, sae in saes.items()}
    taps: dict[str, torch.Tensor] = {}

    def tap(name: str):
        def fn(h: torch.Tensor, offset: int) -> torch.Tensor:
            if not h.requires_grad:  # the first hook: the graph starts here (no weight needs a gradient)
                h = h.detach().requires_grad_(True)
            taps[name] = h
            return h
        return fn

    with torch.enable_grad(), intervene_many(lm, [(n, tap(n)) for n in dict.fromkeys(names.values())]):
        out = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False,
                       **_keep_last_logits(lm.model))
        logits = out.logits[:, -1]
        if target is None:
            target = int(logits[0].argmax())
        value, logp = _objective(logits, target, objective)
        hooked = list(taps)
        grads = torch.autograd.grad(value.sum(), [taps[n] for n in hooked], allow_unused=True)
    value, logp = value.detach(), logp.detach()
    grad_of = {n: (torch.zeros_like(taps[n]) if g is None else g) for n, g in zip(hooked, grads)}
    special = lm.special_mask(torch.tensor(ids))
    per_sae = {key: _sae_nodes(sae, names[key], taps[names[key]][0].detach(), grad_of[names[key]][0], special)
               for key, sae in saes.items()}
    top_lp, top_ids = logp[0].topk(min(10, logp.shape[-1]))
    return Attribution(ids=ids, position=pos, target=target, logprob=float(logp[0, target]), objective=objective,
                       value=float(value[0]), top_next=list(zip(top_ids.tolist(), top_lp.tolist())),
                       saes=per_sae)


@torch.no_grad()
def _sae_nodes(sae: JumpReLUSAE, hook: str, h: torch.Tensor, g: torch.Tensor, special: torch.Tensor
               ) -> SAEAttribution:
    """Latent and error attributions of one SAE from its hook's activations h and gradient g, both [P+1, d].

    Only the active (position, latent) pairs are computed: d_i · g(t) per pair. The error node needs no decode:
    err · g = (h − b_dec) · g − Σ_i f_i (d_i · g), since decode(f) = Σ f_i d_i + b_dec.
    """
    dt = torch.promote_types(torch.promote_types(h.dtype, sae.dtype), torch.float32)
    f = sae_latents(sae, h, special).to(dt)
    g = g.to(sae.device, dt)
    scale = sae.input_scale.to(dt)  # decode works in raw units: d_i = W_dec[i] / s, bias b_dec / s
    t, i = f.nonzero(as_tuple=True)
    scores = f[t, i] * _active_products(f, g, sae.W_dec.detach().to(dt)) / scale  # f_i · (d_i · g)
    attribution = torch.zeros(f.shape, dtype=dt, device=f.device).index_put_((t, i), scores)
    per_position = torch.zeros(f.shape[0], dtype=dt, device=f.device).index_add_(0, t, scores)
    bias = sae.b_dec.detach().to(dt) / scale
    error = ((h.to(sae.device, dt) - bias) * g).sum(-1) - per_position
    error = error.masked_fill(special.to(error.device), 0.0)
    return SAEAttribution(hook, f.cpu(), attribution.cpu(), error.cpu())


def _active_products(f: torch.Tensor, g: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """W_dec[i] · g[t] for every nonzero f[t, i], in `f.nonzero()` (row-major) order: a sampled dense-dense
    product over f's sparsity pattern (~nnz·d work; a dense g @ W_decᵀ costs T·d_sae·d), dense where the
    sparse kernel is unavailable."""
    try:
        with warnings.catch_warnings():  # torch's one-time "sparse CSR tensor support is in beta" notice
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse.sampled_addmm(f.to_sparse_csr(), g, w_dec.T, beta=0.0).values()
    except (RuntimeError, NotImplementedError):
        t, i = f.nonzero(as_tuple=True)
        return (g @ w_dec.T)[t, i]


def ranked_nodes(result: Attribution, top_k: int | None = None) -> list[dict[str, Any]]:
    """Active latent nodes by |attribution|, largest first: {sae, latent, position, activation, attribution}."""
    owner, pos, lat, act, score = [], [], [], [], []
    for j, part in enumerate(result.saes.values()):
        p, i = part.f.nonzero(as_tuple=True)
        owner.append(torch.full_like(p, j))
        pos.append(p), lat.append(i), act.append(part.f[p, i]), score.append(part.attribution[p, i])
    if not owner:
        return []
    score_all = torch.cat(score)
    order = score_all.abs().argsort(descending=True, stable=True)[:top_k]
    names = list(result.saes)
    return [{"sae": names[j], "latent": i, "position": p, "activation": a, "attribution": s}
            for j, p, i, a, s in zip(torch.cat(owner)[order].tolist(), torch.cat(pos)[order].tolist(),
                                     torch.cat(lat)[order].tolist(), torch.cat(act)[order].tolist(),
                                     score_all[order].tolist())]


def error_nodes(result: Attribution, special: Sequence[bool]) -> list[dict[str, Any]]:
    """Every SAE's error node at every non-special position: {sae, position, attribution}."""
    return [{"sae": key, "position": t, "attribution": v}
            for key, part in result.saes.items()
            for t, v in enumerate(part.error.tolist()) if not special[t]]


def attribute(lm: LanguageModel, saes: Mapping[str, JumpReLUSAE], text: str, position: int | None = None,
              target_token: int | str | None = None, top_k: int = 32, objective: str = "logprob",
              max_tokens: int = 512) -> dict[str, Any]:
    """POST /api/attribute: the ranked latent nodes (top_k by |attribution|), every error node, and per SAE the
    summed latent attribution at each position (the page's token heat), for the text's prompt."""
    ids = prompt_ids(lm, text, max_tokens)
    result = attribute_ids(lm, saes, ids, position, target_token, objective)
    special = lm.special_mask(torch.tensor(result.ids)).tolist()
    return {
        "tokens": lm.token_strs(result.ids),
        "token_ids": result.ids,
        "special": special,
        "position": result.position,
        "target_token": result.target,
        "target": lm.tokenizer.decode([result.target]),
        "target_logprob": result.logprob,
        "objective": result.objective,
        "objective_value": result.value,
        "top_next": [{"token_id": i, "token": lm.tokenizer.decode([i]), "logprob": lp} for i, lp in result.top_next],
        "attributions": ranked_nodes(result, top_k),
        "error_attributions": error_nodes(result, special),
        "per_sae": {key: {"hook": part.hook, "position_totals": part.attribution.sum(-1).tolist(),
                          "active": int((part.f > 0).sum()), "total": float(part.attribution.sum()),
                          "error_total": float(part.error.sum())}
                    for key, part in result.saes.items()},
    }


@torch.no_grad()
def ablation_deltas(lm: LanguageModel, saes: Mapping[str, JumpReLUSAE], ids: list[int], position: int,
                    target: int, groups: Sequence[Sequence[Node]], objective: str = "logprob",
                    batch_rows: int = 16) -> list[float]:
    """The measured change of the objective (ablated − clean) when each group of nodes (sae, latent, position)
    is ablated together (clamp to 0 at that position only, SPEC §4; the error term stays). Row 0 of each batch
    is the clean prompt, so an ineffective edit measures exactly 0."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    saes = sae_set(saes)
    pos, target = resolve_target(lm, ids, position, target)
    ids = ids[: pos + 1]
    for group in groups:
        if len(set(group)) != len(group):
            raise ValueError("a node (sae, latent, position) appears twice in one ablation; give it once")
        latents = dict.fromkeys((k, int(i)) for k, i, _ in group)  # range checks, once per (sae, latent)
        check_interventions(saes, [Intervention(i, "ablate", sae=k) for k, i in latents])
        for k, i, t in group:
            if not 0 <= t <= pos:
                raise BadTarget(f"node ({k}, {i}) at position {t} is outside positions 0..{pos}")
    out: list[float] = []
    for start in range(0, len(groups), batch_rows):
        chunk = groups[start:start + batch_rows]
        hooks = _row_edits(saes, chunk)
        with intervene_many(lm, hooks):
            x = torch.tensor([ids] * (len(chunk) + 1), device=lm.device)
            logits = lm.model(input_ids=x, use_cache=False, **_keep_last_logits(lm.model)).logits[:, -1]
        value, _ = _objective(logits, target, objective)
        out += (value[1:] - value[0]).tolist()
    return out


def _row_edits(saes: dict[str, JumpReLUSAE], groups: Sequence[Sequence[Node]]):
    """(hook name, fn) per hook point: batch row r + 1 ablates groups[r]'s nodes at that hook, each at its own
    position, every SAE reading the unmodified activation."""
    plan: dict[str, dict[tuple[int, int], dict[str, list[Intervention]]]] = {}
    for r, group in enumerate(groups, start=1):
        for key, latent, t in group:
            name = hook_name(*hook_of(saes[key]))
            cell = plan.setdefault(name, {}).setdefault((r, t), {})
            cell.setdefault(key, []).append(Intervention(int(latent), "ablate"))

    def make(cells: dict[tuple[int, int], dict[str, list[Intervention]]]):
        def fn(h: torch.Tensor, offset: int) -> torch.Tensor:
            out = h.clone()
            for (r, t), by_sae in cells.items():
                x = h[r, t]
                out[r, t] = x + sum(intervention_delta(x, saes[k], ivs).to(h.dtype) for k, ivs in by_sae.items())
            return out
        return fn

    return [(name, make(cells)) for name, cells in plan.items()]


def measure_ablations(lm: LanguageModel, saes: Mapping[str, JumpReLUSAE], text: str, nodes: Sequence[Node],
                      position: int | None = None, target_token: int | str | None = None,
                      objective: str = "logprob", max_tokens: int = 512) -> dict[str, Any]:
    """The honesty check for attribution rows: per node, the measured Δ objective when it alone is ablated."""
    ids = prompt_ids(lm, text, max_tokens)
    pos, target = resolve_target(lm, ids, position, target_token)
    if target is None:
        target = attribute_target(lm, ids[: pos + 1])
    deltas = ablation_deltas(lm, saes, ids, pos, target, [[n] for n in nodes], objective)
    return {"position": pos, "target_token": target, "objective": objective,
            "ablations": [{"sae": k, "latent": i, "position": t, "delta": d}
                          for (k, i, t), d in zip(nodes, deltas)]}


@torch.no_grad()
def attribute_target(lm: LanguageModel, ids: list[int]) -> int:
    """The model's top next token after `ids`."""
    logits = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False,
                      **_keep_last_logits(lm.model)).logits
    return int(logits[0, -1].argmax())
