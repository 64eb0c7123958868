"""Checkpoints resume exactly: N steps straight == N/2 steps, pause, --resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from app.sae import load_sae
from app.training.activations import save_activation_file
from app.training.checkpoint import list_checkpoints
from app.training.config import TrainConfig
from app.training.trainer import train


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(activations=str(data), d_sae=16, target_l0=3.0, tokens=64 * 20, batch_size=64,
                buffer_tokens=200, checkpoint_every=3, log_every=5, out=str(out), progress=False)
    return TrainConfig(**(base | kw))


def _metrics(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def test_pause_and_resume_gives_identical_weights(tmp_path) -> None:
    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(500, 8) + 0.3)
    straight = train(_cfg(data, tmp_path / "a"))
    paused = train(_cfg(data, tmp_path / "b", stop_at_step=10))
    assert not (paused / "cfg.json").exists()  # not finished: no SAE yet
    ckpts = list_checkpoints(paused)
    assert [p.name for p in ckpts] == ["step-00000009", "step-00000010"]  # the previous one is kept
    resumed = train(_cfg(data, tmp_path / "b", resume=True))
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(load_file(str(straight / "sparsity.safetensors"))["sparsity"],
                       load_file(str(resumed / "sparsity.safetensors"))["sparsity"])
    assert _metrics(straight) == _metrics(resumed)  # lines after the pause were not duplicated
    assert len(_metrics(straight)) == 4 and _metrics(straight)[-1]["step"] == 20


def test_final_folder_loads_with_normalisation_folded(tmp_path) -> None:
    x = torch.randn(400, 8) * 30.0  # far from unit norm: the input scale matters
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    out = train(_cfg(data, tmp_path / "o", tokens=64 * 6))
    sae = load_sae(out)
    assert float(sae.input_scale) == 1.0
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["d_in"] == 8 and cfg["_schedule"]["total_steps"] == 6
    with torch.no_grad():
        f = sae.encode(x[:50])
        assert sae.decode(f).abs().mean() > 1.0  # reconstructions come back in raw units
    rows = _metrics(out)
    keys = {"step", "total_steps", "tokens", "loss", "mse", "l0", "fvu", "dead_fraction", "lambda", "lr"}
    assert keys <= set(rows[-1]) and rows[-1]["tokens"] == 6 * 64


def test_resume_of_a_run_from_before_the_document_split(tmp_path) -> None:
    """A checkpoint whose config has no holdout_every (older runs used every document) resumes as such."""
    from app.training.resume import check_output

    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(500, 8))
    out = train(_cfg(data, tmp_path / "o", stop_at_step=3))
    ckpt = list_checkpoints(out)[-1]
    saved = json.loads((ckpt / "train_config.json").read_text())
    del saved["holdout_every"]
    (ckpt / "train_config.json").write_text(json.dumps(saved))
    assert check_output(_cfg(data, out, resume=True)) == ckpt  # activation-file runs ignore the split
    for key, value in (("activations", None), ("model", "m"), ("corpus", "c.txt"), ("layer", 0)):
        saved[key] = value  # as a corpus run
    (ckpt / "train_config.json").write_text(json.dumps(saved))
    corpus_run = dict(activations=None, model="m", corpus="c.txt", layer=0, resume=True)
    with pytest.raises(ValueError, match="holdout_every is 20 but the run .* used 0"):
        check_output(_cfg(data, out, **corpus_run))
    assert check_output(_cfg(data, out, **corpus_run, holdout_every=0)) == ckpt


def test_resume_with_an_auto_batch_size_follows_the_resumed_run(tmp_path) -> None:
    # A run paused at batch 64 (as runs before the auto rule paused at 4096); the auto rule would pick 256 for
    # this budget, but --resume without --batch-size continues at 64 and equals the straight run.
    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(500, 8) + 0.3)
    straight = train(_cfg(data, tmp_path / "a"))
    train(_cfg(data, tmp_path / "b", stop_at_step=10))
    auto = _cfg(data, tmp_path / "b", resume=True, batch_size=None)
    assert auto.batch_size == 256
    resumed = train(auto)
    assert auto.batch_size == 64 and json.loads((resumed / "train_config.json").read_text())["batch_size"] == 64
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    train(_cfg(data, tmp_path / "c", stop_at_step=10))
    with pytest.raises(ValueError, match="batch_size is 128 but the run in .* used 64"):
        train(_cfg(data, tmp_path / "c", resume=True, batch_size=128))  # an explicit size must match


def test_resume_on_the_sparse_path_takes_it_again(tmp_path) -> None:
    """A run paused while few latents fire resumes on the sparse path, as the straight run goes on (the path is
    picked by the last step's active fraction, which the checkpoint carries): bit-identical weights. Before the
    checkpoint carried it, the first resumed step took the dense path and the weights differed in the last bits."""
    from app.sae.sparse import SPARSE_MAX_DENSITY
    from app.training.checkpoint import load_checkpoint

    torch.manual_seed(11)
    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(2000, 8) + 0.3)
    sparse = dict(d_sae=64, target_l0=1.0, tokens=64 * 40)  # L0 1 of 64 latents: under the sparse path's bound
    straight = train(_cfg(data, tmp_path / "a", **sparse))
    paused = train(_cfg(data, tmp_path / "b", stop_at_step=30, **sparse))
    _, state = load_checkpoint(list_checkpoints(paused)[-1])
    assert state["step"] == 30 and 0 < state["active_fraction"] < SPARSE_MAX_DENSITY
    resumed = train(_cfg(data, tmp_path / "b", resume=True, **sparse))
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("key", "old", "new", "extra"), [
    # θ trained with torch Adam: the optimiser state holds one second moment per latent
    ("threshold_step", "per_latent", "shared", {}),
    # AuxK stopped at the LR decay (a short dead window so that AuxK runs at all)
    ("aux_through_decay", False, True, {"aux_dead_window": 64}),
])
def test_resume_of_a_run_from_before_a_recipe_key(tmp_path, key: str, old, new, extra: dict) -> None:
    """A checkpoint whose config lacks a recipe key that came later ran the old recipe: it resumes only as such
    (the error names the key), and then as the same run straight through."""
    from app.training.resume import check_output

    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(500, 8))
    out = train(_cfg(data, tmp_path / "o", stop_at_step=3, **{key: old}, **extra))
    ckpt = list_checkpoints(out)[-1]
    saved = json.loads((ckpt / "train_config.json").read_text())
    assert saved[key] == old
    del saved[key]
    (ckpt / "train_config.json").write_text(json.dumps(saved))
    refusal = re.escape(f"{key} is {new!r} but the run") + ".* used " + re.escape(repr(old))
    with pytest.raises(ValueError, match=refusal):
        check_output(_cfg(data, out, resume=True, **extra))
    resumed = train(_cfg(data, out, resume=True, **{key: old}, **extra))
    straight = train(_cfg(data, tmp_path / "s", **{key: old}, **extra))
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
