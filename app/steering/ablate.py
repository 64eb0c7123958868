"""Ablation effect (SPEC §4): ablate latents at every non-BOS position and measure, per token, the change in
log-probability of the actual next token, plus the vocabulary tokens whose log-probability moves most.

Rankings use Δlog-prob, never raw Δlogit: an ablation that lifts every logit by the same amount changes no
probability, and ranking raw logits would then list arbitrary tokens as "raised" (issue 11).
Clean and ablated passes run as one batch of two identical rows; only row 1 is edited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from app.encoding.encode import bos_prefix, prompt_ids
from app.lm.hooks import intervene_many
from app.lm.model import LanguageModel
from app.steering.interventions import Intervention, SAEs, check_interventions, steering_hooks

Latent = int | tuple[str, int]  # a latent of the (first) SAE, or (SAE name, latent) in a set of SAEs


def ablations(latents: Sequence[Latent]) -> list[Intervention]:
    """An ablate intervention per latent (bare ints name the first SAE)."""
    return [Intervention(latent=int(x), mode="ablate") if isinstance(x, int)
            else Intervention(latent=int(x[1]), mode="ablate", sae=str(x[0])) for x in latents]


@torch.no_grad()
def clean_and_ablated_logits(lm: LanguageModel, sae: SAEs, ids: list[int],
                             latents: Sequence[Latent]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [T, V] (float32) without and with the latents ablated (each at its SAE's hook)."""
    interventions = ablations(latents)
    check_interventions(sae, interventions)
    hooks = steering_hooks(sae, interventions, protect_prefix=bos_prefix(lm, ids), rows=slice(1, 2))
    with intervene_many(lm, hooks):
        logits = lm.model(input_ids=torch.tensor([ids, ids], device=lm.device), use_cache=False).logits
    logits = logits.float()
    return logits[0], logits[1]


def _token_changes(lm: LanguageModel, values: torch.Tensor, ids: torch.Tensor) -> list[dict[str, Any]]:
    return [{"token": lm.tokenizer.decode([int(i)]), "token_id": int(i), "delta": float(v)}
            for v, i in zip(values.tolist(), ids.tolist())]


@torch.no_grad()
def delta_logprobs(clean: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """log_softmax(ablated) − log_softmax(clean) per row [T, V] (float32; computed in place to save memory)."""
    out = torch.log_softmax(ablated.float(), -1)
    out -= torch.log_softmax(clean.float(), -1)
    return out


@torch.no_grad()
def ablation_effect(lm: LanguageModel, sae: SAEs, text: str, latents: Sequence[Latent],
                    top_n: int = 10, per_token_n: int = 3, max_tokens: int = 512) -> dict[str, Any]:
    """Per-token Δlog-prob of the actual next token when `latents` are ablated together.

    `sae` is one SAE (latents are ints) or a set {name: SAE} whose latents are ints (the first SAE) or
    (name, latent) pairs, ablated at their own hooks in one pass.

    `delta_logprob[j]` is log p_ablated(x_j | x_<j) − log p_clean(x_j | x_<j), aligned with `tokens`
    (None for the first token, which nothing predicts). `top_increased` / `top_decreased` rank vocabulary
    tokens by their Δlog-prob averaged over the predicting positions after BOS; `per_token[j]` gives the
    tokens whose log-prob moved most when predicting x_j. Every `delta` there is a Δlog-prob (nats).
    """
    if not latents:
        raise ValueError("choose at least one latent to ablate")
    ids = prompt_ids(lm, text, max_tokens)
    if len(ids) < 2:
        raise ValueError("the text needs at least one token after BOS")
    edits = ablations(latents)
    clean, ablated = clean_and_ablated_logits(lm, sae, ids, latents)
    target = torch.tensor(ids[1:], device=clean.device)
    lp_clean = torch.log_softmax(clean[:-1], -1).gather(-1, target[:, None])[:, 0]
    dlogp = delta_logprobs(clean[:-1], ablated[:-1])  # [T-1, V]: row t predicts x_{t+1}
    del clean, ablated
    delta = dlogp.gather(-1, target[:, None])[:, 0].tolist()
    start = bos_prefix(lm, ids)  # the BOS row's predictions never change (it is not edited)
    mean_shift = dlogp[start:].mean(0) if dlogp.shape[0] > start else dlogp.mean(0)
    n = min(top_n, mean_shift.numel())
    up_v, up_i = mean_shift.topk(n)
    down_v, down_i = (-mean_shift).topk(n)
    per_token: list[dict[str, Any] | None] = [None]
    k = min(per_token_n, dlogp.shape[-1])
    for t in range(dlogp.shape[0]):
        uv, ui = dlogp[t].topk(k)
        dv, di = (-dlogp[t]).topk(k)
        per_token.append({"increased": _token_changes(lm, uv, ui), "decreased": _token_changes(lm, -dv, di)})
    return {
        "tokens": lm.token_strs(ids),
        "token_ids": ids,
        "latents": [iv.latent for iv in edits],
        "latent_saes": [iv.sae for iv in edits],  # None: the first SAE
        "delta_logprob": [None, *delta],
        "logprob_clean": [None, *lp_clean.tolist()],
        "total_delta_logprob": float(sum(delta)),
        "top_increased": _token_changes(lm, up_v, up_i),
        "top_decreased": _token_changes(lm, -down_v, down_i),
        "per_token": per_token,
    }
