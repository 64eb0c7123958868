"""Request and response models of the JSON API (SPEC §8); they make /docs complete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TEXT_MAX_CHARS = 20_000  # a hard cap before tokenisation; the token limit is a setting


class EncodeRequest(BaseModel):
    """Encode a text into active latents per token."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS, description="the text to analyse")
    sae: str | None = Field(None, description="SAE id (default: the first loaded)")
    saes: list[str] | None = Field(None, max_length=64, description="several SAE ids, encoded from ONE pass of the "
                                   "model: the answer adds `per_sae` {id: {hook, l0, latents_per_token, top_latents}}")
    top_k: int = Field(16, ge=1, description="latents listed per token and for the whole prompt")
    chat: bool = Field(False, description="wrap the text as a user turn in the model's chat template (400 when "
                       "the model has none); one BOS, never two")


class LatentValue(BaseModel):
    latent: int
    value: float = Field(..., description="f_i = pre-activation (the latent is active: pre > θ)")
    margin: float = Field(..., description="pre − θ, how far above its threshold the latent is")
    explanation: str | None = Field(None, description="the latent's shown explanation (null: none, or no index)")


class TopLatent(BaseModel):
    latent: int
    max: float
    count: int = Field(..., description="tokens on which the latent is active")
    values: list[float] = Field(..., description="the latent's value on every token")
    explanation: str | None = Field(None, description="the latent's shown explanation (null: none, or no index)")


class SAEEncoding(BaseModel):
    """One SAE's part of a multi-SAE encode."""

    hook: str
    l0: list[int]
    latents_per_token: list[list[LatentValue]]
    top_latents: list[TopLatent]


class EncodeResponse(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    special: list[bool] = Field(..., description="BOS/EOS/PAD: never encoded")
    l0: list[int] = Field(..., description="active latents per token")
    latents_per_token: list[list[LatentValue]]
    top_latents: list[TopLatent]
    sae: str
    per_sae: dict[str, SAEEncoding] | None = Field(None, description="one entry per id of the request's `saes`")


class InterventionIn(BaseModel):
    """clamp: pin the latent to `value`; add: add `value` along its unit decoder direction; ablate: clamp 0."""

    model_config = ConfigDict(extra="forbid")
    latent: int = Field(..., ge=0)
    mode: Literal["clamp", "add", "ablate"] = "clamp"
    value: float = Field(0.0, ge=-1e5, le=1e5, allow_inf_nan=False)
    sae: str | None = Field(None, description="the SAE this latent belongs to (default: the request's `sae`); "
                            "interventions may name SAEs at several layers")


class SteerRequest(BaseModel):
    """Generate default and steered completions with the same seed and sampling settings."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS)
    sae: str | None = None
    interventions: list[InterventionIn] = Field(default_factory=list)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=10.0, allow_inf_nan=False, description="0 = greedy")
    seed: int = Field(0, ge=0, le=2**63 - 1)
    top_k: int | None = Field(None, ge=1, description="sample only among the k most likely tokens")
    chat: bool = Field(False, description="wrap the prompt as a user turn in the model's chat template (400 when "
                       "the model has none); one BOS, never two")


class SteerResponse(BaseModel):
    default: str
    steered: str
    prompt: str
    prompt_tokens: list[str]
    default_tokens: list[str]
    steered_tokens: list[str]
    sae: str
    chat: bool = False
    model_prompt: str | None = Field(None, description="the text the model continued (the chat-formatted prompt "
                                     "when `chat`)")
    default_stop: Literal["eos", "max_new_tokens"] | None = None
    steered_stop: Literal["eos", "max_new_tokens"] | None = None
    default_note: str | None = Field(None, description="why the default completion shows no text (e.g. EOS came "
                                     "first); null when it shows some")
    steered_note: str | None = None


class AblateRequest(BaseModel):
    """Ablate latents on a text and measure the per-token Δlog-prob of each actual next token."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS)
    sae: str | None = None
    latents: list[Annotated[int, Field(ge=0)]] = Field(..., min_length=1, description="latents to ablate")
    top_n: int = Field(10, ge=1, le=100, description="tokens listed whose log-probability moves most")


class TokenChange(BaseModel):
    token: str
    token_id: int
    delta: float = Field(..., description="change in log-probability (nats), ablated − clean; in `top_*` the "
                         "mean over the predicting positions")


class AblateResponse(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    latents: list[int]
    delta_logprob: list[float | None] = Field(..., description="per token; None for the first token")
    logprob_clean: list[float | None]
    total_delta_logprob: float
    top_increased: list[TokenChange]
    top_decreased: list[TokenChange]
    per_token: list[dict[str, list[TokenChange]] | None]
    sae: str
    explanations: dict[int, str] = Field(default_factory=dict, description="shown explanation of each ablated "
                                         "latent that has one")


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    device: str
    saes: list[str]
    failed_saes: dict[str, str] = Field(default_factory=dict, description="SAE folder name -> why it is not served")


class SAEInfo(BaseModel):
    id: str
    hook: str
    d_in: int
    d_sae: int
    metrics: dict[str, Any]
    indexed: bool
    model_name: str | None = None


class Dashboard(BaseModel):
    """The index's dashboard data (SPEC §5); weight-only fields when the SAE has no index (`indexed` false)."""

    model_config = ConfigDict(extra="allow")
    latent: int
    threshold: float
    density: float | None = None
    max: float | None = None
    mean: float | None = None
    histogram: dict[str, Any] | None = None
    top_examples: list[dict[str, Any]] = Field(default_factory=list)
    interval_examples: list[dict[str, Any]] = Field(default_factory=list)
    top_logits: list[dict[str, Any]] = Field(default_factory=list)
    bottom_logits: list[dict[str, Any]] = Field(default_factory=list)
    neighbors: list[dict[str, Any]] = Field(default_factory=list)
    explanation: str | None = None
    explanation_source: Literal["human", "auto"] | None = Field(None, description="'human' when the shown "
                                                                "explanation was written by hand, 'auto' when an "
                                                                "explainer wrote it")
    explanation_explainer: str | None = Field(None, description="which explainer wrote it ('human', 'builtin', …)")
    explanation_scores: dict[str, dict[str, Any]] = Field(default_factory=dict, description="scores of the shown "
                                                          "explanation: {scorer: {metric: value, metric_n: n}}")
    loss_effects: Literal["computed", "pending", "off"] | None = Field(
        None, description="the top examples' loss effects: 'computed' (shown), 'pending' (left lazy by the index "
        "and not computed yet, e.g. a read-only index.db), 'off' (not indexed with them); null without an index")
    indexed: bool = False
