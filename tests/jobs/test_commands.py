"""The job pipeline's command lines: train flags, torchrun for several GPUs, --resume only with a checkpoint,
eval/index after training (skipped with a note for activation-file jobs)."""

from __future__ import annotations

from pathlib import Path

from app.jobs.commands import child_env, pipeline
from app.jobs.spec import JobSpec

ACTS = JobSpec(d_sae=16, tokens=1000, activations="/root/acts.safetensors", l0_coefficient=0.5, seed=3)
CORPUS = JobSpec(d_sae=64, tokens=5000, model="/root/m", corpus="/root/c.txt", hook="mlp_out", layer=2,
                 target_l0=20, context_size=64)


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_activation_job_trains_then_skips_post_steps(tmp_path):
    steps = pipeline(ACTS, tmp_path / "sae", resume=False, python="/py")
    assert [s.name for s in steps] == ["train", "eval", "index"]
    train = steps[0].argv
    assert train[:4] == ("/py", "-m", "app.cli", "train")
    assert _flag(train, "--activations") == "/root/acts.safetensors" and _flag(train, "--d-sae") == "16"
    assert _flag(train, "--out") == str(tmp_path / "sae") and _flag(train, "--l0-coefficient") == "0.5"
    assert "--resume" not in train and "--model" not in train and "--target-l0" not in train
    assert steps[1].note and steps[2].note and steps[1].argv == ()


def test_corpus_job_flags_and_post_steps(tmp_path):
    steps = pipeline(CORPUS, tmp_path / "sae", resume=False, python="/py", device="cuda:1")
    train, ev, ix = (s.argv for s in steps)
    assert _flag(train, "--model") == "/root/m" and _flag(train, "--corpus") == "/root/c.txt"
    assert _flag(train, "--hook") == "mlp_out" and _flag(train, "--layer") == "2"
    assert _flag(train, "--target-l0") == "20.0" and _flag(train, "--device") == "cuda:1"
    assert ev[3] == "eval" and _flag(ev, "--sae") == str(tmp_path / "sae") and _flag(ev, "--model") == "/root/m"
    # No corpus flag: eval scores the documents the training record (train_config.json) says were held out.
    assert "--corpus" not in ev and "--eval-corpus" not in ev
    assert _flag(ix, "--corpus") == "/root/c.txt"
    assert ix[3] == "index" and _flag(ix, "--tokens") == "5000" and _flag(ix, "--context-size") == "64"
    auto = pipeline(CORPUS, tmp_path / "sae", resume=False, device="auto")[0].argv
    assert "--device" not in auto


def test_torchrun_with_several_gpus(tmp_path):
    train = pipeline(ACTS, tmp_path / "sae", resume=False, python="/py", n_gpus=4)[0].argv
    assert train[:6] == ("/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m")
    assert train[6:8] == ("app.cli", "train")
    eval_argv = pipeline(CORPUS, tmp_path / "sae", resume=False, python="/py", n_gpus=4)[1].argv
    assert "torch.distributed.run" not in eval_argv  # only training is distributed


def test_resume_needs_a_checkpoint_and_skips_finished_training(tmp_path):
    out = tmp_path / "sae"
    assert "--resume" not in pipeline(ACTS, out, resume=True)[0].argv  # nothing to resume from yet
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-10").mkdir()
    assert "--resume" in pipeline(ACTS, out, resume=True)[0].argv
    for f in ("cfg.json", "sae_weights.safetensors"):
        (out / f).write_text("{}")
    assert [s.name for s in pipeline(CORPUS, out, resume=True)] == ["eval", "index"]
    assert [s.name for s in pipeline(CORPUS, out, resume=False)][0] == "train"


def test_child_env_puts_the_project_on_the_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = child_env({"X": "1"})
    parts = env["PYTHONPATH"].split(":")
    assert parts[1] == "/elsewhere" and Path(parts[0], "app", "cli", "__init__.py").is_file() and env["X"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_a_polish_job_passes_its_share_and_the_cli_reads_it_back(tmp_path):
    import pytest

    from app.cli import build_parser
    from app.cli.train import configs_from_args

    spec = JobSpec(d_sae=16, tokens=8192, activations="/root/acts.safetensors", target_l0=3, polish_share=0.5)
    train = pipeline(spec, tmp_path / "sae", resume=False, python="/py")[0].argv
    assert _flag(train, "--polish-share") == "0.5"
    assert "--polish-share" not in pipeline(ACTS, tmp_path / "sae", resume=False, python="/py")[0].argv
    (config,) = configs_from_args(build_parser().parse_args(list(train[3:])))  # the real parser, as the child runs
    assert config.polish_share == 0.5 and config.target_l0 == 3.0
    with pytest.raises(ValueError, match="'polish_share' needs 'target_l0'"):
        JobSpec(d_sae=16, tokens=8192, activations="/a.safetensors", l0_coefficient=0.1, polish_share=0.5)
    with pytest.raises(ValueError, match="does not run in a sweep"):
        JobSpec(d_sae=16, tokens=8192, activations="/a.safetensors", polish_share=0.5, sweep={"d_sae": [8, 16]})
    with pytest.raises(ValueError, match="less than 1"):
        JobSpec(d_sae=16, tokens=8192, activations="/a.safetensors", polish_share=1.0)


def test_a_resumed_polish_job_resumes_from_its_polish_folder(tmp_path):
    spec = JobSpec(d_sae=16, tokens=8192, activations="/root/acts.safetensors", target_l0=3, polish_share=0.5)
    out = tmp_path / "sae"
    assert "--resume" not in pipeline(spec, out, resume=True, python="/py")[0].argv  # nothing began: a fresh run
    (out / "polish").mkdir(parents=True)
    (out / "polish" / "train_config.json").write_text("{}")  # the first part began (no checkpoint in out yet)
    assert "--resume" in pipeline(spec, out, resume=True, python="/py")[0].argv
    assert "--resume" not in pipeline(spec, out, resume=False, python="/py")[0].argv
