"""`evaluate_sae` and `jumpscope eval` against brute-force SPEC §3 metrics on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from app.cli import main
from app.lm import load_lm
from app.lm.corpus import load_contexts
from app.lm.hooks import capture, intervene
from app.sae import JumpReLUSAE, load_sae
from app.training.evaluate import evaluate_sae
from tests.conftest import TINY_TEXTS

HOOK, KIND, LAYER = "blocks.1.hook_resid_post", "resid_post", 1
CONTEXT = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(TINY_TEXTS))
    return path


@pytest.fixture(scope="module")
def contexts(tiny_lm, corpus):
    return load_contexts(tiny_lm, corpus, CONTEXT, n_tokens=5 * CONTEXT, seed=0)


def _random_sae(lm, d_sae: int = 64, seed: int = 0) -> JumpReLUSAE:
    d = lm.d_model
    sae = JumpReLUSAE.create(d, d_sae, seed=seed, metadata={"model_name": lm.name, "hook_name": HOOK,
                                                            "context_size": CONTEXT})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d, generator=gen) * 0.1)
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
        sae.log_threshold.copy_((torch.rand(d_sae, generator=gen) * 0.5 + 0.05).log())
    return sae


def _identity_sae(lm) -> JumpReLUSAE:
    """f = (relu(x), relu(−x)) with a tiny θ; x̂ = x up to entries smaller than θ."""
    d = lm.d_model
    sae = JumpReLUSAE.create(d, 2 * d, threshold=1e-7, metadata={"model_name": lm.name, "hook_name": HOOK})
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    return sae


def _brute_force(sae: JumpReLUSAE, lm, contexts: torch.Tensor) -> dict[str, float]:
    """One context at a time, straight from the definitions."""
    hs, xhs, acts = [], [], []
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    kl, n_pred = 0.0, 0
    with torch.no_grad():
        for row in contexts:
            ids = row.unsqueeze(0)
            special = lm.special_mask(ids)[0]
            h = capture(lm, ids, None, KIND, LAYER)[0]
            pre = h @ sae.W_enc + sae.b_enc
            active = pre > sae.threshold
            x_hat = (pre * active) @ sae.W_dec + sae.b_dec
            real = ~special
            hs.append(h[real]), xhs.append(x_hat[real]), acts.append(active[real])
            replacements = {"clean": None, "sae": x_hat, "zero": torch.zeros_like(h)}
            logps = {}
            for name, rep in replacements.items():
                if rep is None:
                    logits = lm.model(input_ids=ids).logits[0]
                else:
                    def fn(hh, off, rep=rep, keep=special[None, :, None]):
                        return torch.where(keep, hh, rep[None])

                    with intervene(lm, KIND, LAYER, fn):
                        logits = lm.model(input_ids=ids).logits[0]
                logps[name] = F.log_softmax(logits[:-1][real[:-1]], -1)
            targets = row[1:][real[:-1]]
            n_pred += len(targets)
            for name, lp in logps.items():
                ce[name] += float(F.nll_loss(lp, targets, reduction="sum"))
            kl += float(F.kl_div(logps["sae"], logps["clean"], log_target=True, reduction="sum"))
    H, XH, A = torch.cat(hs), torch.cat(xhs), torch.cat(acts)
    c, s, z = (ce[k] / n_pred for k in ("clean", "sae", "zero"))
    density = A.double().mean(0)
    return {
        "tokens": H.shape[0],
        "l0": float(A.sum(1).double().mean()),
        "fvu": float((H - XH).pow(2).sum() / (H - H.mean(0)).pow(2).sum()),
        "ce_clean": c, "ce_sae": s, "ce_zero_ablation": z,
        "delta_lm_loss": s - c,
        "ce_score": (z - s) / (z - c),
        "kl_div": kl / n_pred,
        "dead_fraction": float((density == 0).double().mean()),
        "dense_fraction": float((density > 0.1).double().mean()),
    }


def test_metrics_equal_brute_force(tiny_model_dir, contexts) -> None:
    # float64 LM and SAE. The random tiny model barely reacts to zero-ablation (CE_zero − CE_clean ≈ 1e-3), so
    # in float32 the CE score amplifies the ~1e-7 rounding of the logits (which differs between a batched
    # use_cache=False pass and the brute force's one-row pass) to ~1e-4 relative: a coin-flip against any
    # tolerance that still catches a wrong definition. In float64 both sides agree to ~1e-12.
    lm = load_lm(tiny_model_dir("llama"), device="cpu", dtype="float64")
    sae = _random_sae(lm)
    sae.to_dtype_device(dtype="float64")
    got = evaluate_sae(sae, lm, contexts, batch_size=3)
    want = _brute_force(sae, lm, contexts)
    assert got["tokens"] == want["tokens"] < contexts.numel()  # BOS/EOS positions excluded
    assert got["dead_over_tokens"] == got["tokens"]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert 0 < got["l0"] < sae.d_sae and got["delta_lm_loss"] > 0
    hist = got["density_histogram"]
    assert sum(hist["counts"]) + hist["never"] == sae.d_sae
    assert hist["never"] == round(got["dead_fraction"] * sae.d_sae)


def test_identity_sae_is_lossless(tiny_model_dir, contexts) -> None:
    # float64 LM and SAE: a random tiny model barely reacts to zero-ablation, so the CE score's denominator
    # is small and the check needs a reconstruction that is exact to ~1e-15.
    lm = load_lm(tiny_model_dir("llama"), device="cpu", dtype="float64")
    sae = _identity_sae(lm)
    sae.to_dtype_device(dtype="float64")
    got = evaluate_sae(sae, lm, contexts, batch_size=4)
    assert got["ce_zero_ablation"] - got["ce_clean"] > 1e-4  # the score's denominator is not zero
    assert got["fvu"] < 1e-12
    assert abs(got["delta_lm_loss"]) < 1e-10
    assert got["ce_score"] == pytest.approx(1.0, abs=1e-6)
    assert got["kl_div"] < 1e-10


def test_zero_reconstruction_scores_zero(tiny_lm, contexts) -> None:
    sae = _random_sae(tiny_lm)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    got = evaluate_sae(sae, tiny_lm, contexts, batch_size=4)
    assert got["ce_sae"] == pytest.approx(got["ce_zero_ablation"], abs=1e-6)
    assert got["ce_score"] == pytest.approx(0.0, abs=1e-5)
    assert got["fvu"] > 0.5


def test_cli_eval_writes_eval_json(tiny_lm, corpus, tmp_path, capsys) -> None:
    folder = tmp_path / "sae"
    _random_sae(tiny_lm).save(str(folder))
    rc = main(["eval", "--sae", str(folder), "--corpus", str(corpus), "--tokens", "64", "--batch-size", "2"])
    assert rc == 0
    saved = json.loads((folder / "eval.json").read_text())
    assert saved["contexts"] == 4 and saved["context_size"] == CONTEXT  # from the SAE's metadata
    assert saved["model"] == tiny_lm.name and saved["hook_name"] == HOOK
    want = evaluate_sae(load_sae(folder), tiny_lm, load_contexts(tiny_lm, corpus, CONTEXT, n_tokens=64))
    assert saved["ce_score"] == pytest.approx(want["ce_score"], rel=1e-5)
    out = capsys.readouterr().out
    assert "ΔLM loss" in out and "CE score" in out and f"over {saved['tokens']} tokens" in out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--corpus": "missing.txt"}, "not found"),
        ({"--tokens": "0"}, "--tokens"),
        ({"--context-size": "1"}, "--context-size"),
        ({"--hook": "blocks.x.hook_nothing"}, "hook name"),
        ({"d_in": 8}, "d_in 8"),
        ({"--sae": "nowhere"}, "no such file"),
    ],
)
def test_cli_eval_bad_input(tiny_lm, corpus, tmp_path, capsys, change, message) -> None:
    folder = tmp_path / "sae"
    if "d_in" in change:
        JumpReLUSAE.create(change["d_in"], 16, metadata={"model_name": tiny_lm.name, "hook_name": HOOK}).save(
            str(folder))
    else:
        _random_sae(tiny_lm).save(str(folder))
    args = {"--sae": str(folder), "--corpus": str(corpus), "--tokens": "32"}
    args.update({k: v for k, v in change.items() if k.startswith("--")})
    if args["--corpus"] == "missing.txt":
        args["--corpus"] = str(tmp_path / "missing.txt")
    rc = main(["eval", *[item for pair in args.items() for item in pair]])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not (folder / "eval.json").exists()


def test_ce_accumulator_chunking_is_exact() -> None:
    """Chunked log-softmax (bounded memory for big vocabularies) gives the unchunked sums."""
    from app.training.evaluate import _CEAccumulator

    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(3, 7, 11, generator=gen) for _ in range(3)]
    targets = torch.randint(0, 11, (3, 7), generator=gen)
    counted = torch.rand(3, 7, generator=gen) > 0.3
    whole, chunked = _CEAccumulator(), _CEAccumulator()
    whole.update(*logits, targets, counted)
    chunked.update(*logits, targets, counted, chunk=4)
    assert chunked.count == whole.count == int(counted.sum())
    for key, value in whole.means().items():
        assert chunked.means()[key] == pytest.approx(value, rel=1e-6), key
    want = F.cross_entropy(logits[0][counted], targets[counted])
    assert whole.means()["ce_clean"] == pytest.approx(float(want), rel=1e-6)
