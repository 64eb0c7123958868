"""One definition per quantity: a latent's top/bottom logits and decoder neighbours are the same numbers on the
weight-only dashboard (`latent_weights_summary`) and on the indexed one (`app.index.service.latent_dashboard`),
and both equal a brute force written here from the final norm's weights, W_U and a dense cosine matrix."""

from __future__ import annotations

import pytest
import torch

from app.encoding import latent_weights_summary
from app.index.builder import run_index
from app.index.config import IndexConfig
from app.index.service import latent_dashboard
from app.lm import LanguageModel, load_lm
from app.lm.logit_lens import logit_effects
from app.sae.geometry import decoder_neighbors
from tests.conftest import TINY_TEXTS
from tests.steering.helpers import make_sae

N_LOGITS, N_NEIGHBORS = 5, 4
LATENTS = (0, 7, 23)
INPUT_SCALE = 1.7  # decode divides by it: a direction in raw units is W_dec[i] / input_scale


def _perturbed_lm(folder, family: str) -> LanguageModel:
    """The tiny LM with a random final-norm gain (a fresh init has gain 1, which hides the norm) and bias."""
    lm = load_lm(folder, device="cpu")
    gen = torch.Generator().manual_seed(3)
    norm = lm.final_norm
    with torch.no_grad():
        norm.weight.copy_(torch.randn(norm.weight.shape, generator=gen))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen))
    return lm


def _brute_logits(lm: LanguageModel, family: str, d: torch.Tensor) -> torch.Tensor:
    """d · gain @ W_U with the gain written out per family: w (Llama), 1 + w (Gemma), centred · w (GPT-2)."""
    w = lm.final_norm.weight.detach().double()
    d = d.double()
    if family == "gpt2":
        d, gain = d - d.mean(), w
    elif family == "gemma":
        gain = 1.0 + w
    else:
        gain = w
    w_u = lm.model.get_output_embeddings().weight.detach().double().T  # [d_model, vocab]
    return (d * gain) @ w_u


def _brute_neighbors(w_dec: torch.Tensor, latent: int) -> tuple[list[int], list[float]]:
    """Nearest other latents from the full dense d_sae × d_sae cosine matrix."""
    w = w_dec.double()
    cos = torch.nn.functional.cosine_similarity(w[:, None, :], w[None, :, :], dim=-1)
    cos.fill_diagonal_(float("-inf"))
    top = cos[latent].topk(N_NEIGHBORS)
    return top.indices.tolist(), top.values.tolist()


@pytest.fixture(scope="module", params=["llama", "gemma", "gpt2"])
def setup(request, tiny_model_dir, tmp_path_factory):
    """(family, LM with a random final-norm gain, SAE with input_scale ≠ 1, finished index DB)."""
    family = request.param
    lm = _perturbed_lm(tiny_model_dir(family), family)
    sae = make_sae(lm.d_model, d_sae=32, seed=1)
    sae.input_scale.fill_(INPUT_SCALE)
    tmp = tmp_path_factory.mktemp(f"logit-lens-{family}")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n\n".join(TINY_TEXTS))
    cfg = IndexConfig(context_size=32, batch_contexts=4, top_k=2, n_intervals=2, per_interval=1, window_before=2,
                      window_after=1, n_logits=N_LOGITS, n_neighbors=N_NEIGHBORS, loss_effects=False)
    db = run_index(lm, sae, corpus, 256, tmp / "index.db", cfg)
    return family, lm, sae, db


def _assert_matches_brute(data: dict, lm: LanguageModel, family: str, w_dec: torch.Tensor, latent: int) -> None:
    eff = _brute_logits(lm, family, w_dec[latent] / INPUT_SCALE)
    for key, largest in (("top_logits", True), ("bottom_logits", False)):
        want = eff.topk(N_LOGITS, largest=largest)
        assert [e["token"] for e in data[key]] == lm.token_strs(want.indices.tolist()), key
        assert [e["value"] for e in data[key]] == pytest.approx(want.values.tolist(), rel=1e-5, abs=1e-6), key
    ids, cos = _brute_neighbors(w_dec, latent)
    assert [e["latent"] for e in data["neighbors"]] == ids
    assert [e["cosine"] for e in data["neighbors"]] == pytest.approx(cos, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("latent", LATENTS)
def test_no_index_and_index_dashboards_equal_brute_force(setup, latent):
    family, lm, sae, db = setup
    w_dec = sae.W_dec.detach()
    plain = latent_weights_summary(lm, sae, latent, n_logits=N_LOGITS, n_neighbors=N_NEIGHBORS)
    indexed = latent_dashboard(db, latent)
    _assert_matches_brute(plain, lm, family, w_dec, latent)
    _assert_matches_brute(indexed, lm, family, w_dec, latent)
    for key, name, value in (("top_logits", "token", "value"), ("bottom_logits", "token", "value"),
                             ("neighbors", "latent", "cosine")):  # the same panel, whichever path filled it
        assert [e[name] for e in plain[key]] == [e[name] for e in indexed[key]], key
        assert [e[value] for e in plain[key]] == pytest.approx([e[value] for e in indexed[key]], rel=1e-6), key


def test_chunked_equals_one_block(setup):
    """Small chunks (many steps, never the whole matrix) and a subset of rows give the one-block answer."""
    _, lm, sae, _ = setup
    w = sae.W_dec.detach()
    rows = torch.tensor([5, 0, 31])
    full = logit_effects(lm, w, N_LOGITS)
    small = logit_effects(lm, w, N_LOGITS, chunk_elems=3 * lm.unembed.shape[1])
    part = logit_effects(lm, w[rows], N_LOGITS)
    for a, b, c in zip(full, small, part, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a[rows], c)
    ids, cos = decoder_neighbors(w, N_NEIGHBORS)
    ids_s, cos_s = decoder_neighbors(w, N_NEIGHBORS, chunk_elems=5 * w.shape[0])
    ids_r, cos_r = decoder_neighbors(w, N_NEIGHBORS, rows=rows, chunk_elems=2 * w.shape[0])
    torch.testing.assert_close(ids, ids_s)
    torch.testing.assert_close(cos, cos_s)
    torch.testing.assert_close(ids[rows], ids_r)
    torch.testing.assert_close(cos[rows], cos_r)
    for i in rows.tolist():
        want_ids, want_cos = _brute_neighbors(w, i)
        assert ids[i].tolist() == want_ids
        assert cos[i].tolist() == pytest.approx(want_cos, rel=1e-5, abs=1e-6)
