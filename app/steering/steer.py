"""Default vs steered generation with the same seed and sampling settings (SPEC §4).

Both completions run as one batch of two identical prompts; the interventions touch only row 1, and each
row samples from its own generator seeded with the same seed, so with no effective edit the two rows agree
token for token. Sampling is our own small loop (temperature, optional top-k) so no global RNG is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.encoding.encode import bos_prefix, prompt_ids
from app.lm.chat import chat_prompt, completion_note
from app.lm.hooks import intervene_many
from app.lm.model import LanguageModel
from app.steering.interventions import Intervention, SAEs, check_interventions, steering_hooks


@dataclass
class SteerResult:
    """The prompt and both completions (text and token strings)."""

    prompt: str
    default: str
    steered: str
    prompt_tokens: list[str] = field(default_factory=list)
    default_tokens: list[str] = field(default_factory=list)
    steered_tokens: list[str] = field(default_factory=list)
    chat: bool = False  # the prompt was wrapped in the model's chat template
    model_prompt: str = ""  # the text the model continued (`prompt`, or its chat-formatted version)
    default_stop: str = "max_new_tokens"  # "eos" or "max_new_tokens"
    steered_stop: str = "max_new_tokens"
    default_note: str | None = None  # why the completion shows no text (None when it shows some)
    steered_note: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            generators: list[torch.Generator]) -> torch.Tensor:
    """Next token per row from [B, V] logits: argmax at temperature 0, else softmax(logits / T) sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = torch.nan_to_num(logits.double(), nan=float("-inf"), posinf=torch.finfo(torch.float64).max)
    if not bool(torch.isfinite(logits).any(-1).all()):
        raise ValueError("the model returned no finite logit; the interventions are too strong to sample from")
    # Shift by the row maximum first (in float64, where a denormal T is still > 0), so a tiny temperature gives
    # 0 / -inf (greedy-like) rather than inf / inf.
    scaled = (logits - logits.max(-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    picks = [torch.multinomial(probs[r], 1, generator=generators[r]) for r in range(probs.shape[0])]
    return torch.cat(picks)


_CACHE_KEYS = ("cache", "past_key_values")  # what transformers ≥ 5 / 4.x call the KV cache


def _cache_keyword(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its KV cache under in the installed transformers."""
    params = inspect.signature(model.forward).parameters
    return next((k for k in _CACHE_KEYS if k in params), "past_key_values")


def _kv_cache(out: Any) -> Any:
    """The KV cache a forward with use_cache=True returned."""
    return next(out[k] for k in _CACHE_KEYS if k in out)


@torch.no_grad()
def steer(
    lm: LanguageModel,
    sae: SAEs,
    prompt: str,
    interventions: Sequence[Intervention],
    max_new_tokens: int = 32,
    temperature: float = 0.7,
    seed: int = 0,
    top_k: int | None = None,
    max_prompt_tokens: int = 512,
    chat: bool = False,
) -> SteerResult:
    """Generate a default and a steered continuation of `prompt` side by side.

    The interventions apply at their SAE's hook to prompt and generated positions alike, never to BOS. `sae` is
    one SAE or a set {name: SAE} (several layers in one generation: each intervention names its SAE).
    Generation stops per row at EOS or after `max_new_tokens` (`default_stop` / `steered_stop`); an empty
    completion comes with a note saying why. With `chat`, the prompt is wrapped as a user turn in the model's
    chat template (`chat_prompt`; one BOS, never two).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature < 0:
        raise ValueError("temperature must be ≥ 0 (0 = greedy)")
    check_interventions(sae, interventions)
    model_prompt = chat_prompt(lm, prompt) if chat else prompt
    ids = prompt_ids(lm, model_prompt, max_prompt_tokens, extra=max_new_tokens)
    device = lm.device
    gens = [torch.Generator(device=device).manual_seed(int(seed)) for _ in range(2)]
    eos = lm.tokenizer.eos_token_id
    hooks = steering_hooks(sae, interventions, protect_prefix=bos_prefix(lm, ids), rows=slice(1, 2))
    new: list[list[int]] = [[], []]
    done = [False, False]
    cache_kw = _cache_keyword(lm.model)
    # The prompt pass starts at position 0; each cached step continues where the last one stopped.
    with intervene_many(lm, hooks, track_positions=True):
        out = lm.model(input_ids=torch.tensor([ids, ids], device=device), use_cache=True)
        for step in range(max_new_tokens):
            nxt = _sample(out.logits[:, -1, :], temperature, top_k, gens)
            for r in range(2):
                if not done[r]:
                    tok = int(nxt[r])
                    if tok == eos:
                        done[r] = True
                    else:
                        new[r].append(tok)
            if all(done) or step == max_new_tokens - 1:
                break  # no forward pass for a token nobody will read
            out = lm.model(input_ids=nxt[:, None], use_cache=True, **{cache_kw: _kv_cache(out)})
    decode = lm.tokenizer.decode
    return SteerResult(
        prompt=prompt,
        default=decode(new[0], skip_special_tokens=True),
        steered=decode(new[1], skip_special_tokens=True),
        prompt_tokens=lm.token_strs(ids),
        default_tokens=lm.token_strs(new[0]),
        steered_tokens=lm.token_strs(new[1]),
        chat=chat,
        model_prompt=model_prompt,
        default_stop="eos" if done[0] else "max_new_tokens",
        steered_stop="eos" if done[1] else "max_new_tokens",
        default_note=completion_note(lm, new[0], done[0], chat),
        steered_note=completion_note(lm, new[1], done[1], chat),
    )
