"""A sweep job: comma lists on the train command, eval and index per SAE folder, spec checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.jobs.commands import pipeline, sae_folders
from app.jobs.spec import MAX_SWEEP_RUNS, JobSpec
from app.training.sweep import sweep_configs


def _spec(**kw) -> JobSpec:
    base = dict(model="org/model", corpus="/c/corpus.txt", layer=2, d_sae=64, tokens=8192)
    return JobSpec(**(base | kw))


def test_sweep_job_pipeline_and_folders():
    spec = _spec(sweep={"layer": [1, 3], "target_l0": [4.0, 8.0]})
    out = Path("/data/saes/job")
    steps = pipeline(spec, out, resume=False, python="py")
    argv = list(steps[0].argv)
    assert argv[argv.index("--layer") + 1] == "1,3" and argv[argv.index("--target-l0") + 1] == "4.0,8.0"
    assert argv[argv.index("--d-sae") + 1] == "64" and argv.count("--layer") == 1
    folders = sae_folders(spec, out)
    # The names are the trainer's own: what `jumpscope train` with these flags writes.
    configs = sweep_configs({"model": "m", "corpus": "c", "hook": "resid_post", "layer": [1, 3], "d_sae": 64,
                             "target_l0": [4.0, 8.0], "tokens": 8192, "out": str(out)})
    assert [str(f) for f in folders] == [c.out for c in configs]
    evals = [s for s in steps if s.name == "eval"]
    assert [s.argv[s.argv.index("--sae") + 1] for s in evals] == [str(f) for f in folders]
    assert len([s for s in steps if s.name == "index"]) == 4
    assert sae_folders(spec.model_dump(), out) == folders  # a stored record's spec dict
    one = _spec()
    assert sae_folders(one, out) == [out] and sae_folders(one.model_dump(), out) == [out]
    assert "--target-l0" in pipeline(one, out, resume=False)[0].argv


@pytest.mark.parametrize("sweep,why", [
    ({"layer": [1, 1]}, "repeated"),
    ({"d_sae": [8, 64], "target_l0": [4.0, 16.0]}, "every target L0"),
    ({"d_sae": list(range(8, 8 + MAX_SWEEP_RUNS + 1))}, "at most"),
    ({"d_sae": []}, "at least 1"),
    ({"width": [1]}, "Extra inputs"),
])
def test_bad_sweeps_are_refused(sweep, why):
    with pytest.raises(ValidationError, match=why):
        _spec(sweep=sweep)
    with pytest.raises(ValidationError, match="needs a corpus job"):
        JobSpec(activations="/a.safetensors", d_sae=8, tokens=4096, sweep={"layer": [0, 1]})
