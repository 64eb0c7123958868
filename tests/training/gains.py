"""A float64 brute force of the collapsed-latent pick (app/training/resample.py: collapsed_latents), shared by the
tests of the re-initialising option and of AuxK's set."""

from __future__ import annotations

from app.sae import JumpReLUSAE


def gain_brute(sae: JumpReLUSAE, share: float) -> tuple[set[int], set[int]]:
    """(surely collapsed, surely not): ‖W_enc,i‖·‖W_dec,i‖ in float64, latent by latent, below / above `share` ×
    the median (the lower of the two middle values, as torch's) by more than float32's rounding."""
    w_enc, w_dec = sae.W_enc.detach().double(), sae.W_dec.detach().double()
    gains = [float(w_enc[:, i].norm()) * float(w_dec[i].norm()) for i in range(sae.d_sae)]
    cut = share * sorted(gains)[(len(gains) - 1) // 2]
    return ({i for i, g in enumerate(gains) if g < cut * (1 - 1e-5)},
            {i for i, g in enumerate(gains) if g > cut * (1 + 1e-5)})
