"""The SAE layouts found in Hugging Face Hub repos, and what a Gemma Scope repo's name and path say about an SAE.

Three layouts (SPEC §9), told apart by the files of the folder:

* "saelens": `cfg.json` + `sae_weights.safetensors` (read by app.sae.formats; metadata from cfg.json).
* "gemma-scope-1": `params.npz` with W_enc [d_in, d_sae], W_dec, b_enc, b_dec, threshold (google/gemma-scope-*
  repos, Gemma 2 models). The npz holds weights only: model and hook come from the repo name and the path
  (`layer_L/width_16k/average_l0_N`): `-res` repos read blocks.L.hook_resid_post, `-mlp` repos blocks.L.hook_mlp_out
  (after Gemma's post-MLP norm, which is JumpScope's mlp_out for Gemma 2/3).
* "gemma-scope-2": `params.safetensors` with lower-case w_enc [d_in, d_sae], w_dec, b_enc, b_dec, threshold, and
  sometimes a `config.json` (google/gemma-scope-2-* repos, Gemma 3 models; paths `resid_post/layer_L_width_…`,
  `mlp_out/…`).

Attention SAEs of both (per-head hook_z inputs of o_proj), embedding SAEs and transcoders/CLTs are refused: JumpScope
hooks resid_pre, resid_post, attn_out and mlp_out. Nothing here imports sae_lens or transformers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from app.sae.errors import SAEFormatError, brief
from app.sae.jumprelu import JumpReLUSAE, SAEConfig

SAELENS, GEMMA_SCOPE_1, GEMMA_SCOPE_2 = "saelens", "gemma-scope-1", "gemma-scope-2"
LAYOUTS = (SAELENS, GEMMA_SCOPE_1, GEMMA_SCOPE_2)
GS2_WEIGHTS, GS2_CONFIG = "params.safetensors", "config.json"
GS2_KEYS = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec", "threshold": "threshold"}

_GS1_REPO = re.compile(r"^gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att|transcoders)$")
_GS2_REPO = re.compile(r"^gemma-scope-2-(\d+[mb])-(pt|it)$")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)(?:/|_|$)")
_UNSUPPORTED = "JumpScope hooks resid_pre, resid_post, attn_out and mlp_out only"


def detect_layout(folder: Path) -> str | None:
    """The layout of an SAE folder from the files it holds, or None when it is none of the three."""
    if (folder / "cfg.json").is_file() and (folder / "sae_weights.safetensors").is_file():
        return SAELENS
    if (folder / "params.npz").is_file():
        return GEMMA_SCOPE_1
    if (folder / GS2_WEIGHTS).is_file():
        return GEMMA_SCOPE_2
    return None


def gemma_scope_metadata(repo_id: str, path: str) -> dict[str, Any] | None:
    """model_name / hook_name (and what else is known) of a Gemma Scope 1 or 2 SAE from its repo and path.

    None when the repo is not named like a Gemma Scope repo; SAEFormatError for a Gemma Scope SAE that JumpScope
    cannot hook (attention hook_z, embedding, transcoder) or whose path names no layer.
    """
    name = repo_id.rsplit("/", 1)[-1]
    where = f"{repo_id}/{path}"
    if m := _GS1_REPO.match(name):
        size, variant, kind = m.groups()
        if kind == "att":
            raise SAEFormatError(f"{where}: Gemma Scope attention SAEs read the per-head attention outputs "
                                 f"(blocks.L.attn.hook_z); {_UNSUPPORTED}")
        if kind == "transcoders":
            raise SAEFormatError(f"{where}: transcoders map MLP inputs to outputs; {_UNSUPPORTED} SAEs")
        if path.split("/", 1)[0] == "embedding":
            raise SAEFormatError(f"{where}: embedding SAEs read hook_embed; {_UNSUPPORTED}")
        hook_kind = "resid_post" if kind == "res" else "mlp_out"
        model = f"google/gemma-2-{size}" + ("-it" if variant == "it" else "")
        # Gemma Scope 1 was trained on 1024-token sequences with BOS.
        return {"model_name": model, "hook_name": _hook(hook_kind, path, where), "context_size": 1024,
                "prepend_bos": True}
    if m := _GS2_REPO.match(name):
        size, variant = m.groups()
        group = path.split("/", 1)[0].removesuffix("_all")
        if group in ("attn_out",):
            raise SAEFormatError(f"{where}: Gemma Scope 2 attn_out SAEs read the input of o_proj (per-head "
                                 f"blocks.L.attn.hook_z); {_UNSUPPORTED}")
        if group not in ("resid_post", "mlp_out"):
            raise SAEFormatError(f"{where}: {group!r} is not a Gemma Scope 2 SAE JumpScope can hook "
                                 f"(transcoders and CLTs are not SAEs); {_UNSUPPORTED}")
        # The 270m base model is published without the -pt suffix.
        model = f"google/gemma-3-{size}" + ("" if (size, variant) == ("270m", "pt") else f"-{variant}")
        return {"model_name": model, "hook_name": _hook(group, path, where), "prepend_bos": True}
    return None


def _hook(kind: str, path: str, where: str) -> str:
    m = _LAYER.search(path)
    if not m:
        raise SAEFormatError(f"{where}: the path names no layer (layer_N); add ?hook=blocks.N.hook_{kind}")
    return f"blocks.{int(m.group(1))}.hook_{kind}"


def load_gemma_scope_2(folder: Path) -> JumpReLUSAE:
    """A Gemma Scope 2 folder (params.safetensors [+ config.json]): raw activations in, as Gemma Scope 1."""
    from app.sae.formats import from_tensors  # formats imports the hub lazily; this keeps one direction

    config = folder / GS2_CONFIG
    if config.is_file():
        try:
            raw = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SAEFormatError(f"{config}: not valid JSON ({e})") from None
        arch = raw.get("architecture") if isinstance(raw, dict) else None
        if arch not in (None, "jump_relu", "jumprelu"):
            raise SAEFormatError(f"{config}: architecture {arch!r} is not supported; JumpScope reads JumpReLU SAEs")
    path = folder / GS2_WEIGHTS
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{path}: unreadable or truncated safetensors file ({brief(e)})") from None
    extra = sorted(set(stored) - set(GS2_KEYS))
    if extra:
        raise SAEFormatError(f"{path}: unexpected tensors {', '.join(extra)} (a transcoder?); JumpScope reads "
                             f"JumpReLU SAEs with {', '.join(GS2_KEYS)}")
    missing = [k for k in GS2_KEYS if k not in stored]
    if missing:
        raise SAEFormatError(f"{path}: missing {', '.join(missing)} (have {', '.join(sorted(stored)) or 'nothing'})")
    if stored["w_enc"].ndim != 2:
        raise SAEFormatError(f"{path}: w_enc must be 2-D [d_model, d_sae], got shape {tuple(stored['w_enc'].shape)}")
    d_in, d_sae = stored["w_enc"].shape
    tensors = {ours: stored[theirs].float() for theirs, ours in GS2_KEYS.items()}
    cfg = SAEConfig(d_in=int(d_in), d_sae=int(d_sae), dtype="float32", metadata={"source": GEMMA_SCOPE_2})
    return from_tensors(cfg, tensors, str(path))
