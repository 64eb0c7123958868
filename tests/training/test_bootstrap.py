"""Bootstrap intervals over contexts (SPEC §9) against a brute force: the same resamples (same seed), each one
evaluated by concatenating the drawn contexts' tokens and applying the SPEC §3 definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.lm import load_lm
from app.lm.corpus import load_contexts
from app.lm.hooks import capture, intervene
from app.training.evaluate import evaluate_sae
from tests.conftest import TINY_TEXTS
from tests.training.test_evaluate import CONTEXT, KIND, LAYER, _random_sae

N_BOOT, SEED = 150, 7


def _per_context(sae, lm, contexts):
    """For each context: real-token activations, reconstructions, and per-prediction nll (3 runs) and KL."""
    out = []
    with torch.no_grad():
        for row in contexts:
            ids = row.unsqueeze(0)
            special = lm.special_mask(ids)[0]
            h = capture(lm, ids, None, KIND, LAYER)[0]
            pre = h @ sae.W_enc + sae.b_enc
            x_hat = (pre * (pre > sae.threshold)) @ sae.W_dec + sae.b_dec
            real = ~special
            logps = {}
            for name, rep in {"clean": None, "sae": x_hat, "zero": torch.zeros_like(h)}.items():
                if rep is None:
                    logits = lm.model(input_ids=ids).logits[0]
                else:
                    def fn(hh, off, rep=rep, keep=special[None, :, None]):
                        return torch.where(keep, hh, rep[None])

                    with intervene(lm, KIND, LAYER, fn):
                        logits = lm.model(input_ids=ids).logits[0]
                logps[name] = F.log_softmax(logits[:-1][real[:-1]], -1)
            targets = row[1:][real[:-1]]
            nll = {k: -lp.gather(-1, targets[:, None])[:, 0] for k, lp in logps.items()}
            kl = F.kl_div(logps["sae"], logps["clean"], log_target=True, reduction="none").sum(-1)
            out.append((h[real], x_hat[real], nll, kl))
    return out


def _metrics(parts) -> dict[str, float]:
    H = torch.cat([p[0] for p in parts])
    XH = torch.cat([p[1] for p in parts])
    ce = {k: float(torch.cat([p[2][k] for p in parts]).mean()) for k in ("clean", "sae", "zero")}
    return {
        "fvu": float((H - XH).pow(2).sum() / (H - H.mean(0)).pow(2).sum()),
        "delta_lm_loss": ce["sae"] - ce["clean"],
        "ce_score": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
        "kl_div": float(torch.cat([p[3] for p in parts]).mean()),
    }


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    lm = load_lm(tiny_model_dir("llama"), device="cpu", dtype="float64")
    path = tmp_path_factory.mktemp("boot") / "docs.txt"
    path.write_text("\n\n".join(f"{i} {t}" for i, t in enumerate(TINY_TEXTS)))
    contexts = load_contexts(lm, path, CONTEXT, n_tokens=12 * CONTEXT, seed=0)
    sae = _random_sae(lm)
    sae.to_dtype_device(dtype="float64")
    return lm, sae, contexts


def test_intervals_equal_brute_force_bootstrap(setup) -> None:
    lm, sae, contexts = setup
    got = evaluate_sae(sae, lm, contexts, batch_size=5, n_boot=N_BOOT, seed=SEED)
    parts = _per_context(sae, lm, contexts)
    C = len(parts)
    draws = torch.randint(0, C, (N_BOOT, C), generator=torch.Generator().manual_seed(SEED))
    samples = [_metrics([parts[int(i)] for i in row]) for row in draws]
    whole = _metrics(parts)
    for name in ("fvu", "delta_lm_loss", "ce_score", "kl_div"):
        values = np.array([s[name] for s in samples])
        want = np.percentile(values[np.isfinite(values)], [2.5, 97.5])  # linear interpolation, as torch.quantile
        lo, hi = got[f"{name}_ci"]
        assert lo == pytest.approx(want[0], rel=1e-9, abs=1e-12), name
        assert hi == pytest.approx(want[1], rel=1e-9, abs=1e-12), name
        assert got[name] == pytest.approx(whole[name], rel=1e-9), name
        assert lo < hi  # the resamples really differ
    assert got["bootstrap"] == {"resamples": N_BOOT, "seed": SEED, "level": 0.95, "unit": "context"}
    # Another seed draws other resamples; n_boot=0 leaves the intervals out.
    assert evaluate_sae(sae, lm, contexts, n_boot=N_BOOT, seed=SEED + 1)["fvu_ci"] != got["fvu_ci"]
    assert "fvu_ci" not in evaluate_sae(sae, lm, contexts, n_boot=0)
