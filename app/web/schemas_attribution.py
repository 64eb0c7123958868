"""Request and response models of the attribution API (SPEC §9): POST /api/attribute and its measured check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.web.schemas import TEXT_MAX_CHARS

MAX_SAES = 64  # ids one request may name (each must be loaded anyway)


class AttributeRequest(BaseModel):
    """Attribute log p(target) at a position to every active latent of the chosen SAEs."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS)
    position: int | None = Field(None, ge=0, description="token index whose next token is the target (default: last)")
    target_token: int | str | None = Field(None, description="token id, or the text of one token (default: the "
                                                             "model's top next token)")
    saes: list[str] | None = Field(None, max_length=MAX_SAES, description="SAE ids (default: every loaded SAE)")
    top_k: int = Field(32, ge=1, description="attribution rows returned, largest |attribution| first")
    objective: Literal["logprob", "logit"] = Field("logprob", description="log p(target), or its raw logit")


class AttributionRow(BaseModel):
    sae: str
    latent: int
    position: int
    activation: float
    attribution: float = Field(..., description="activation × ∂objective/∂latent (first-order effect of the latent)")


class ErrorRow(BaseModel):
    sae: str
    position: int
    attribution: float = Field(..., description="error · ∂objective/∂error of the SAE's reconstruction error node")


class NextToken(BaseModel):
    token_id: int
    token: str
    logprob: float


class SAEAttributionSummary(BaseModel):
    hook: str
    position_totals: list[float] = Field(..., description="summed latent attribution per position (token heat)")
    active: int
    total: float
    error_total: float


class AttributeResponse(BaseModel):
    tokens: list[str]
    token_ids: list[int]
    special: list[bool]
    position: int
    target_token: int
    target: str
    target_logprob: float
    objective: str
    objective_value: float
    top_next: list[NextToken]
    attributions: list[AttributionRow]
    error_attributions: list[ErrorRow]
    per_sae: dict[str, SAEAttributionSummary]


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sae: str
    latent: int = Field(..., ge=0)
    position: int = Field(..., ge=0)


class AblationsRequest(BaseModel):
    """Measure Δ objective when each node (sae, latent, position) alone is ablated (clamp to 0 there)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(..., min_length=1, max_length=TEXT_MAX_CHARS)
    position: int | None = Field(None, ge=0)
    target_token: int | str | None = None
    objective: Literal["logprob", "logit"] = "logprob"
    nodes: list[Node] = Field(..., min_length=1)


class MeasuredAblation(BaseModel):
    sae: str
    latent: int
    position: int
    delta: float = Field(..., description="objective with the latent ablated − clean (≈ −attribution)")


class AblationsResponse(BaseModel):
    position: int
    target_token: int
    objective: str
    ablations: list[MeasuredAblation]
