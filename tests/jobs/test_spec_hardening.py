"""Issue 16: path errors say nothing about what exists outside the root; a spec a job could never finish (tokens
below one batch, an activation file without its LM and hook) is refused at submit."""

from __future__ import annotations

import os

import pytest

from app.jobs.spec import MIN_TOKENS, JobSpec, JobSpecError, confine_path


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "corpora"
    (r / "sub").mkdir(parents=True)
    (r / "acts.safetensors").write_bytes(b"x")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret.txt").write_text("no")
    return r


def _message(value: str, root) -> str:
    with pytest.raises(JobSpecError) as e:
        confine_path(value, root, what="corpus")
    return str(e.value).replace(value, "<v>")


def test_outside_paths_get_one_answer_whether_they_exist_or_not(root, tmp_path):
    exists, missing = tmp_path / "private" / "secret.txt", tmp_path / "private" / "nothing.txt"
    assert _message(str(exists), root) == _message(str(missing), root) == "corpus: '<v>' is outside the corpus root"
    assert _message("/etc/passwd", root) == _message("/etc/no-such-file-here", root)
    # Through a link in the root that points out: the same answer for a target that exists and one that does not.
    os.symlink(tmp_path / "private", root / "out")
    assert _message("out/secret.txt", root) == _message("out/nothing.txt", root) == (
        "corpus: '<v>' is outside the corpus root")
    os.symlink(tmp_path / "private" / "gone.txt", root / "dangling.txt")
    assert _message("dangling.txt", root) == "corpus: '<v>' is outside the corpus root"
    # Inside the root a missing path is still reported as missing.
    assert "does not exist" in _message("sub/missing.txt", root)
    assert "does not exist" in _message(str(root / "sub" / "missing.txt"), root)


def test_tokens_below_one_batch_are_refused_at_submit():
    base = dict(d_sae=8, activations="a", model="gpt2", hook="resid_post", layer=0)
    assert MIN_TOKENS == 4096  # the trainer's default batch: `train` exits 2 below it
    problem = JobSpec(tokens=MIN_TOKENS - 1, **base).submit_problem()
    assert problem and "at least one training batch (4096 tokens)" in problem and "4095" in problem
    assert JobSpec(tokens=MIN_TOKENS, **base).submit_problem() is None
    corpus = JobSpec(d_sae=8, tokens=100, model="gpt2", corpus="c")
    assert "4096" in corpus.submit_problem()


@pytest.mark.parametrize(("given", "missing"), [
    ({}, "'model', 'hook', 'layer'"),
    ({"model": "gpt2"}, "'hook', 'layer'"),
    ({"model": "gpt2", "hook": "mlp_out"}, "'layer'"),
    ({"hook": "mlp_out", "layer": 2}, "'model'"),
])
def test_activation_jobs_must_name_model_hook_and_layer(given, missing):
    problem = JobSpec(d_sae=8, tokens=MIN_TOKENS, activations="a", **given).submit_problem()
    assert problem and f"missing: {missing}" in problem and "cfg.json" in problem
    full = JobSpec(d_sae=8, tokens=MIN_TOKENS, activations="a", model="gpt2", hook="mlp_out", layer=2)
    assert full.submit_problem() is None
    # A stored record (all fields dumped) validates again and stays acceptable.
    assert JobSpec.model_validate(full.model_dump()).submit_problem() is None
