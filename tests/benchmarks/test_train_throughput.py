"""benchmarks/train_throughput.py: both paths it times compute the same step, with and without the frequency
penalty, and its JSON carries the ratio the docs quote."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks.train_throughput import make_optimizer, make_sae, run, train_step


@pytest.mark.parametrize("frequency", [0.0, 0.01])
def test_the_sparse_and_dense_steps_it_times_update_the_weights_alike(frequency: float) -> None:
    x = torch.randn(512, 32) / 32**0.5
    after = []
    for sparse in (True, False):
        sae = make_sae(32, 256, l0=8, device=torch.device("cpu"))
        opt = make_optimizer(sae, fused=False)
        l0 = train_step(sae, opt, x, 1e-3, sparse, frequency, target_l0=8.0)
        assert 2 < float(l0) < 32
        after.append({name: p.detach().clone() for name, p in sae.named_parameters()})
    for name in after[0]:
        torch.testing.assert_close(after[0][name], after[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_frequency_mode_reports_both_paths() -> None:
    args = argparse.Namespace(d_in=32, d_sae=256, batch=512, steps=2, dense_steps=0, l0=8.0, device="cpu",
                              bf16=False, matmul_dtype=None, matmul_n=64, skip_dense=False, no_fused_adam=True,
                              frequency_coefficient=0.01)
    result = run(args)
    assert result["frequency_coefficient"] == 0.01
    assert result["tokens_per_s"] > 0 and result["dense_tokens_per_s"] > 0 and result["speedup_vs_dense"] > 0
    assert 2 < result["l0"] < 32
