"""The JumpReLU sparse autoencoder (SPEC §1).

    pre  = x @ W_enc + b_enc
    f    = JumpReLU_θ(pre) = pre * H(pre - θ)
    x̂    = f @ W_dec + b_dec
    loss = mean_batch ||x - x̂||²  +  λ · mean_batch Σ_i H(pre_i - θ_i)

θ has three states. While it trains, θ is a parameter the optimiser updates, either θ = exp(log_threshold)
(Gemma Scope 1's parameterisation) or θ = linear_threshold itself (the trainer's default: Adam moves a log
parameter multiplicatively, so a small θ init barely moves in a short run; docs/training.md). H is piecewise
constant, so θ gets straight-through pseudo-derivatives through the rectangle kernel K(u) = 1[-1/2 < u < 1/2]
with bandwidth ε. A loaded SAE keeps θ exactly as stored (`stored_threshold`): exp(log θ) would move it by an
ulp in fp32 and by up to ~2 % in bf16, and a latent with pre == θ must stay inactive (SPEC §1).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from app.runtime import dtype_name, resolve_dtype
from app.sae.sparse import SPARSE_MAX_DENSITY, sparse_loss_parts
from app.sae.ste import jumprelu, rectangle, step

__all__ = ["JumpReLUSAE", "SAEConfig", "SAEOutput", "jumprelu", "rectangle", "step"]


SAELENS_FORMAT_VERSION = "6.0.0"  # the SAELens release whose cfg.json layout JumpScope writes


def saelens_format_version(recorded: Any) -> str:
    """The `sae_lens_version` to write: a recorded ≥ 6 version is kept, anything older or missing becomes 6.0.0."""
    try:
        major = int(str(recorded).split(".")[0])
    except ValueError:
        major = 0
    return str(recorded) if major >= 6 else SAELENS_FORMAT_VERSION


@dataclass
class SAEConfig:
    """Everything needed to rebuild a JumpReLU SAE; written as SAELens-compatible cfg.json."""

    d_in: int  # width of the activations the SAE reads
    d_sae: int  # number of latents
    dtype: str = "float32"  # dtype of the stored weights
    bandwidth: float = 0.001  # ε of the straight-through θ gradient (training only)
    apply_b_dec_to_input: bool = False  # SAELens convention: encode x − b_dec when true
    metadata: dict[str, Any] = field(default_factory=dict)  # model_name, hook_name, hook_layer, ...

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth}")
        resolve_dtype(self.dtype, torch.device("cpu"))  # validates the name

    def to_json(self) -> dict[str, Any]:
        """The cfg.json of SAELens ≥ 6 (what `sae_lens.SAE.load_from_disk` reads), plus JumpScope's `bandwidth`.

        Model, hook and dataset live in `metadata` only (one copy, so it cannot go stale), and
        `metadata.sae_lens_version` marks the ≥ 6 layout: without it SAELens takes its pre-6.0 path.
        """
        meta = dict(self.metadata)
        meta["sae_lens_version"] = saelens_format_version(meta.get("sae_lens_version"))
        return {
            "architecture": "jumprelu",
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": self.dtype,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",  # JumpScope folds any input scale before saving
            "reshape_activations": "none",
            "bandwidth": self.bandwidth,
            "metadata": meta,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)


class SAEOutput(NamedTuple):
    """What `JumpReLUSAE.forward` returns: reconstruction, latents and the loss parts."""

    x_hat: torch.Tensor  # [..., d_in] reconstruction
    latents: torch.Tensor  # [..., d_sae] f = JumpReLU(pre)
    mse: torch.Tensor  # mean over the batch of ||x − x̂||²
    l0: torch.Tensor  # mean over the batch of Σ_i H(pre_i − θ_i), with STE gradient to θ
    loss: torch.Tensor  # mse + λ·l0


class LossParts(NamedTuple):
    """What `JumpReLUSAE.loss_parts` returns, in normalised units; the two counts carry the STE gradient to θ."""

    x_hat_n: torch.Tensor  # [..., d_in] reconstruction
    latents: torch.Tensor  # [..., d_sae] f = JumpReLU(pre)
    mse: torch.Tensor  # mean over the batch of ||x − x̂||²
    l0_tokens: torch.Tensor  # [...] per token: Σ_i H(pre_i − θ_i)
    latent_counts: torch.Tensor  # [d_sae] per latent: Σ_tokens H(pre_i − θ_i)


class JumpReLUSAE(nn.Module):
    """A JumpReLU SAE; `input_scale` normalises x (1 once folded).

    θ (`threshold`) is either trainable, θ = exp(`log_threshold`) (a fresh SAE from `create`), or stored,
    θ = `stored_threshold` exactly as loaded (`set_threshold`; `log_threshold` is then None). Saving writes θ
    itself, so save → load round-trips it bit-exactly in every dtype.
    """

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = resolve_dtype(cfg.dtype, torch.device("cpu"))
        kw = dict(device=device, dtype=dtype)
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, **kw))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **kw))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in, **kw))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, **kw))
        # θ = exp(log_threshold) while training; set_threshold() swaps to an exact stored θ (log_threshold None).
        self.log_threshold: nn.Parameter | None = nn.Parameter(torch.full((cfg.d_sae,), math.log(0.001), **kw))
        # θ itself as the training parameter (`use_linear_threshold()`); None otherwise.
        self.linear_threshold: nn.Parameter | None = None
        self.register_buffer("stored_threshold", None)
        # Scalar multiplying raw activations during training (E||x·s||² = 1); 1 after fold_input_scale().
        self.register_buffer("input_scale", torch.ones((), **kw))
        # Active fraction (L0 / d_sae) of the last forward; `forward` uses it to pick the sparse path.
        self._active_fraction: torch.Tensor | None = None

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        d_in: int,
        d_sae: int,
        threshold: float = 0.001,
        seed: int | None = None,
        device: torch.device | str | None = None,
        decoder_norm: float = 1.0,
        **cfg_kwargs: Any,
    ) -> JumpReLUSAE:
        """A freshly initialised SAE per SPEC §2: He-uniform W_dec with rows of norm `decoder_norm` (unit by
        default; 0.1 for the trainer's free-decoder recipe), W_enc = W_decᵀ, zero biases."""
        sae = cls(SAEConfig(d_in=d_in, d_sae=d_sae, **cfg_kwargs), device=device)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.empty(d_sae, d_in)
        bound = math.sqrt(6.0 / d_in)  # kaiming/He-uniform bound for fan_in = d_in
        w.uniform_(-bound, bound, generator=gen)
        w *= decoder_norm / w.norm(dim=1, keepdim=True)
        with torch.no_grad():
            sae.W_dec.copy_(w)
            sae.W_enc.copy_(w.T)
            sae.log_threshold.fill_(math.log(threshold))
        return sae

    @property
    def threshold(self) -> torch.Tensor:
        """θ, shape [d_sae]: the stored tensor as is, or the trainable θ (linear, or exp(log_threshold))."""
        if self.linear_threshold is not None:
            return self.linear_threshold
        if self.log_threshold is None:
            return self.stored_threshold
        return self.log_threshold.exp()

    @property
    def threshold_trainable(self) -> bool:
        """True while θ is a parameter (linear or log); False once θ is stored exactly."""
        return self.log_threshold is not None or self.linear_threshold is not None

    @property
    def threshold_parameter(self) -> nn.Parameter:
        """The parameter the optimiser updates for θ: `linear_threshold` or `log_threshold`."""
        param = self.linear_threshold if self.linear_threshold is not None else self.log_threshold
        if param is None:
            raise ValueError("this SAE's thresholds are stored, not trainable: call make_threshold_trainable()")
        return param

    @torch.no_grad()
    def use_linear_threshold(self) -> None:
        """Train θ itself instead of log θ (same values); `clamp_threshold_()` keeps it ≥ 0 after each step."""
        theta = self.threshold.detach().clone()
        self.log_threshold = None
        self.stored_threshold = None
        self.linear_threshold = nn.Parameter(theta)

    @torch.no_grad()
    def clamp_threshold_(self) -> None:
        """Project a linear θ back to ≥ 0 (below 0 the gate would pass negative pre-activations); no-op otherwise."""
        if self.linear_threshold is not None:
            self.linear_threshold.clamp_(min=0.0)

    @torch.no_grad()
    def assign_threshold_(self, latents: torch.Tensor, theta: torch.Tensor) -> None:
        """θ_i ← theta_i (≥ 0, activation units) for the `latents`, in whichever trainable parameter holds θ
        (log θ takes θ = 0 as the smallest positive float, as `make_threshold_trainable` does)."""
        if self.linear_threshold is not None:
            self.linear_threshold[latents] = theta.to(self.dtype)
        elif self.log_threshold is not None:
            self.log_threshold[latents] = theta.to(self.dtype).clamp_min(torch.finfo(self.dtype).tiny).log()
        else:
            raise ValueError("the SAE's θ is stored, not trainable")

    @torch.no_grad()
    def set_threshold(self, theta: torch.Tensor) -> None:
        """Store θ exactly (cast to the SAE's dtype only): encode then uses `pre > θ` with these very values.

        Drops the trainable log θ; `make_threshold_trainable()` brings it back for further training.
        """
        theta = torch.as_tensor(theta)
        if tuple(theta.shape) != (self.d_sae,):
            raise ValueError(f"threshold must have shape ({self.d_sae},), got {tuple(theta.shape)}")
        if not bool((theta >= 0).all()):
            raise ValueError("threshold must be ≥ 0 for every latent")
        self.log_threshold = None
        self.linear_threshold = None
        self.stored_threshold = theta.detach().to(device=self.device, dtype=self.dtype).clone()

    @torch.no_grad()
    def make_threshold_trainable(self) -> None:
        """Turn a stored θ back into the training parameter log θ (θ then moves by rounding: training only)."""
        if self.log_threshold is None and self.linear_threshold is None:
            tiny = torch.finfo(self.stored_threshold.dtype).tiny  # θ = 0 would give log θ = −inf
            self.log_threshold = nn.Parameter(self.stored_threshold.clamp_min(tiny).log())
            self.stored_threshold = None

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # --- the math of SPEC §1 ------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """pre = x @ W_enc + b_enc (after the input scale and, for SAELens folders, x − b_dec); with `latents`
        (indices), only those columns: shape [..., len(latents)]."""
        x = x.to(self.dtype) * self.input_scale  # cheap: [tokens, d_in], and no host sync on GPU
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        b_enc, w_enc = (self.b_enc, self.W_enc) if latents is None else (self.b_enc[latents], self.W_enc[:, latents])
        # addmm fuses the bias into the matmul (one pass over the [tokens, d_sae] output, not two).
        pre = torch.addmm(b_enc, x.reshape(-1, self.cfg.d_in), w_enc)
        return pre.reshape(*x.shape[:-1], b_enc.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents f = pre·H(pre − θ); a latent is active iff pre > θ (pre == θ is inactive)."""
        pre = self.pre_acts(x)
        if torch.is_grad_enabled() and pre.requires_grad:
            return jumprelu(pre, self.threshold, self.cfg.bandwidth)
        # Inference: mask in place, so encoding costs the matmul plus one elementwise pass.
        return pre.masked_fill_(pre <= self.threshold, 0.0)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """x̂ = f @ W_dec + b_dec, in raw (unscaled) activation units."""
        return (f.to(self.dtype) @ self.W_dec + self.b_dec) / self.input_scale

    def forward(
        self, x: torch.Tensor, l0_coefficient: float | torch.Tensor = 0.0, sparse: bool | None = None
    ) -> SAEOutput:
        """Reconstruction, latents and loss = mse + λ·L0, all in normalised units (x·input_scale).

        The code below is the dense reference. `sparse=True` computes the same values and gradients on the
        sparse path of app.sae.sparse (only active / near-threshold pairs after the encoder matmul);
        `None` picks it while training once the previous call's active fraction is below
        `SPARSE_MAX_DENSITY` (dense early in training, when many latents fire); `False` forces dense.
        """
        x_hat_n, f, mse, l0_tokens, _ = self.loss_parts(x, sparse)
        l0 = l0_tokens.mean()
        loss = mse + l0_coefficient * l0
        return SAEOutput(x_hat_n / self.input_scale, f, mse, l0, loss)

    def loss_parts(
        self, x: torch.Tensor, sparse: bool | None = None
    ) -> LossParts:
        """(x̂_n, f, mse, L0 per token, active tokens per latent) in normalised units, on the dense or sparse path
        (`forward` explains `sparse`).

        L0 per token is Σ_i H(pre_i − θ_i) and a latent's count Σ_tokens H(pre_i − θ_i), both with the
        straight-through gradient to θ, so objectives can be written on them (mean L0 for the L0 penalty,
        (L0 − T)² for the quadratic one, squared firing frequencies for the frequency penalty) on either path.
        """
        x_n = x.to(self.dtype) * self.input_scale
        x_in = x_n - self.b_dec if self.cfg.apply_b_dec_to_input else x_n
        theta = self.threshold
        if self._use_sparse(sparse):
            x_hat_n, f, mse, l0_tokens, counts = sparse_loss_parts(
                x_n, x_in, self.W_enc, self.b_enc, self.W_dec, self.b_dec, theta, self.cfg.bandwidth
            )
        else:
            pre = x_in @ self.W_enc + self.b_enc
            f = jumprelu(pre, theta, self.cfg.bandwidth)
            x_hat_n = f @ self.W_dec + self.b_dec
            mse = (x_n - x_hat_n).pow(2).sum(-1).mean()
            h = step(pre, theta, self.cfg.bandwidth)
            l0_tokens = h.sum(-1)
            counts = h.reshape(-1, self.d_sae).sum(0)
        self._active_fraction = l0_tokens.detach().mean() / self.d_sae
        return LossParts(x_hat_n, f, mse, l0_tokens, counts)

    @property
    def active_fraction(self) -> float | None:
        """L0 / d_sae of the last training forward, which picks the path of the next one (None: none yet). The
        trainer sets it to the global batch's after each step, so that every rank picks the same path, and a
        training checkpoint carries it so that a resumed run takes the path the straight run takes."""
        return None if self._active_fraction is None else float(self._active_fraction)

    @active_fraction.setter
    def active_fraction(self, value: float | None) -> None:
        self._active_fraction = None if value is None else torch.tensor(value, dtype=torch.float32)

    def _use_sparse(self, sparse: bool | None) -> bool:
        """Dispatch rule of `forward`: explicit choice, else sparse when training at a low active fraction."""
        if sparse is not None:
            return sparse
        if not (torch.is_grad_enabled() and self.W_enc.requires_grad) or self._active_fraction is None:
            return False
        return float(self._active_fraction) < SPARSE_MAX_DENSITY

    # --- normalisation and persistence --------------------------------------------------------------
    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold the scalar input normalisation into the weights so the SAE takes raw activations.

        With s = input_scale: pre = (s·x)W_enc + b_enc = x(s·W_enc) + b_enc, and x̂_raw = (fW_dec + b_dec)/s.
        θ and the latents are unchanged.
        """
        s = self.input_scale.clone()
        if self.cfg.apply_b_dec_to_input:
            # (s·x − b_dec)W_enc = x(s·W_enc) − b_dec·W_enc: move the b_dec term into b_enc first.
            self.b_enc.sub_(self.b_dec @ self.W_enc)
            self.cfg.apply_b_dec_to_input = False
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        self.input_scale.fill_(1.0)

    @torch.no_grad()
    def fold_input_mean(self, mean: torch.Tensor) -> None:
        """Make an SAE trained on centred activations x − μ (μ = `mean`, raw units) take x itself.

        With s = input_scale and m = s·μ: pre = s(x − μ)W_enc + b_enc = (s·x)W_enc + (b_enc − m·W_enc), and
        x̂ = (fW_dec + b_dec)/s + μ = (fW_dec + b_dec + m)/s; under apply_b_dec_to_input the encoder reads
        s·x − (b_dec + m) = s(x − μ) − b_dec, so b_dec alone moves. θ and the latents are unchanged.
        """
        m = torch.as_tensor(mean).to(device=self.device, dtype=torch.float64) * float(self.input_scale)
        if tuple(m.shape) != (self.d_in,):
            raise ValueError(f"mean must have shape ({self.d_in},), got {tuple(m.shape)}")
        if not self.cfg.apply_b_dec_to_input:
            self.b_enc.sub_((m @ self.W_enc.double()).to(self.dtype))
        self.b_dec.add_(m.to(self.dtype))

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Rescale every latent so its W_dec row has unit norm, leaving x̂ and which latents are active unchanged.

        With n_i = ‖W_dec,i‖: W_dec,i /= n_i, W_enc[:, i] *= n_i, b_enc,i *= n_i, θ_i *= n_i, so pre_i, θ_i and
        f_i all scale by n_i > 0 (H(pre − θ) is unchanged) and f_i·W_dec,i is the same vector.
        """
        n = torch.linalg.vector_norm(self.W_dec, dim=1).clamp_min(1e-12)
        self.W_dec.div_(n.unsqueeze(1))
        self.W_enc.mul_(n)
        self.b_enc.mul_(n)
        if self.linear_threshold is not None:
            self.linear_threshold.mul_(n)
        elif self.log_threshold is not None:
            self.log_threshold.add_(n.log())
        else:
            self.stored_threshold.mul_(n)

    def save(self, folder: str, sparsity: torch.Tensor | None = None) -> None:
        """Write the native SAELens-compatible folder (atomically); see app.sae.formats.save_native."""
        from app.sae.formats import save_native

        save_native(self, folder, sparsity=sparsity)

    def to_dtype_device(self, dtype: torch.dtype | str | None = None, device: torch.device | str | None = None):
        """Move weights to a dtype/device and keep cfg.dtype in step."""
        if dtype is not None:
            dt = resolve_dtype(dtype, torch.device("cpu"))
            self.to(dtype=dt)
            self.cfg.dtype = dtype_name(dt)
        if device is not None:
            self.to(device=device)
        return self
