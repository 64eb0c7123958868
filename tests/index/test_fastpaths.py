"""The fast paths of the collector compute exactly what the plain definitions compute."""

from __future__ import annotations

import torch

from app.index.activations import active_entries, encode_active, encode_chunk
from app.index.config import IndexConfig
from app.index.state import HistBinner, hist_bins, hist_edges, latent_keys, position_keys, position_mix
from app.sae import JumpReLUSAE
from tests.index.test_collector import CFG, run_collector, synthetic_acts

_M32 = 0xFFFFFFFF


def _mix(x):
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def test_position_keys_are_the_documented_hash():
    """Stored samples depend on the hash: the split (per position, then per latent) must not change it."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 1 << 40, (500,), generator=g)
    lat = torch.randint(0, 1 << 17, (500,), generator=g)
    for seed in (0, 7):
        s = _mix(torch.tensor(seed))
        want = _mix(_mix(_mix((pos & _M32) ^ s) ^ ((pos >> 32) & _M32)) ^ lat)
        assert torch.equal(position_keys(lat, pos, seed), want)
        assert torch.equal(latent_keys(position_mix(pos, seed), lat), want)
    assert position_keys(lat, pos).max() <= _M32 and position_keys(lat, pos).min() >= 0


def test_hist_binner_equals_bucketize_on_and_around_every_edge():
    for cfg in (IndexConfig(), CFG, IndexConfig(hist_min_exp=-3, hist_max_exp=1, hist_bins_per_decade=5)):
        edges = hist_edges(cfg)
        f = edges.float()
        inf = torch.tensor(float("inf"))
        around = torch.cat([f, torch.nextafter(f, inf), torch.nextafter(f, -inf)])
        g = torch.Generator().manual_seed(1)
        rand = torch.exp(torch.empty(20000).uniform_(-14, 14, generator=g))
        v = torch.cat([around[around > 0], rand, torch.tensor([1e-30, 3e38, float("inf")])]).float()
        assert torch.equal(HistBinner(cfg)(v), hist_bins(v, edges))


def test_active_entries_of_encode_equal_the_dense_encoding():
    sae = JumpReLUSAE.create(16, 40, seed=0)
    x = torch.randn(30, 16)
    with torch.no_grad():
        sae.log_threshold.fill_(-0.5)
        dense = encode_chunk(sae, x, 8, 40)
        ent = encode_active(sae, x, 8, 40)
    ref = active_entries(dense)
    assert ent.n_latents == 32 and 0 < ent.value.numel() < dense.numel()
    for a, b in zip(ent[:3], ref[:3], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(dense[ent.token, ent.latent], ent.value)
    assert torch.equal(dense, sae.encode(x).detach()[:, 8:])


def test_admission_keeps_only_a_few_candidates_once_buffers_fill():
    """After warm-up most active entries are rejected by the vectorised mask before any sort or merge."""
    acts = synthetic_acts(n_rows=200, d=6, seed=2)
    batches = [list(range(i, i + 4)) for i in range(0, 200, 4)]
    early = run_collector(acts, CFG, batches[:5], chunk=6)
    assert early.candidates > 0.2 * early.entries  # warm-up: the buffers are still filling
    half = run_collector(acts, CFG, batches[:25], chunk=6)
    whole = run_collector(acts, CFG, batches, chunk=6)
    late_entries, late_cand = whole.entries - half.entries, whole.candidates - half.candidates
    assert late_entries > 1000 and late_cand < 0.02 * late_entries
