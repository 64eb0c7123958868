"""Evaluation scores held-out data: the token rows `jumpscope eval` runs through the LM never come from a
document that training read — straight, after a pause + --resume, and through the admin job's command lines.

The reference is independent of the split code: every LM forward pass is recorded (a pre-hook on the
transformer body of the model that `load_lm` returns), and each row is mapped back to the corpus documents it
holds by the unique marker "Note <i>:" written into document i.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import app.lm
from app.cli import main
from app.jobs.commands import eval_step, train_step
from app.jobs.spec import JobSpec
from app.training import quickeval
from tests.conftest import TINY_TEXTS

N_DOCS, HOLDOUT = 120, 5
MARK = re.compile(r"Note (\d+):")
TRAIN = ["--d-sae", "32", "--tokens", "1024", "--batch-size", "128",
         "--context-size", "32", "--buffer-tokens", "256", "--checkpoint-every", "2", "--no-progress",
         "--holdout-every", str(HOLDOUT)]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(f"Note {i}: {TINY_TEXTS[i % 5]}" for i in range(N_DOCS)))
    return path


@pytest.fixture()
def seen(monkeypatch):
    """phase → list of token rows [T] that went through the LM's forward in that phase."""
    record: dict[str, list[torch.Tensor]] = {"train": [], "eval": [], "summary": []}
    phase = {"now": "train"}
    real_load = app.lm.load_lm

    def load_lm(*args, **kwargs):
        lm = real_load(*args, **kwargs)

        def spy(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            record[phase["now"]].extend(ids.detach().cpu())

        lm.base_model.register_forward_pre_hook(spy, with_kwargs=True)  # every path runs the body
        return lm

    monkeypatch.setattr(app.lm, "load_lm", load_lm)
    # The run summary's held-out check reads held-out documents on purpose (it is an eval): its forwards are
    # recorded apart, and must touch held-out documents only.
    real_check = quickeval.held_out_check

    def held_out_check(*args, **kwargs):
        before, phase["now"] = phase["now"], "summary"
        try:
            return real_check(*args, **kwargs)
        finally:
            phase["now"] = before

    monkeypatch.setattr(quickeval, "held_out_check", held_out_check)
    return record, phase


def _documents(rows: list[torch.Tensor], tokenizer) -> set[int]:
    return {int(m) for row in rows for m in MARK.findall(tokenizer.decode(row.tolist()))}


def _unique(rows: list[torch.Tensor]) -> set[tuple[int, ...]]:
    return {tuple(r.tolist()) for r in rows}


def _check_disjoint(seen, out, tokenizer) -> dict:
    record, _ = seen
    train_docs, eval_docs = _documents(record["train"], tokenizer), _documents(record["eval"], tokenizer)
    assert len(train_docs) > 20 and len(eval_docs) > 3  # both sides really ran
    assert not train_docs & eval_docs, sorted(train_docs & eval_docs)
    assert not train_docs & _documents(record["summary"], tokenizer)  # the run summary's check is held out too
    assert not _unique(record["train"]) & _unique(record["eval"])
    # Held-out documents lie among the training ones, not only after them: the split is by document.
    assert min(eval_docs) < max(train_docs)
    result = json.loads((out / "eval.json").read_text())
    split = result["split"]
    rows = _unique(record["eval"])  # eval runs each row 3× (clean, spliced, ablated)
    assert split["disjoint_from_training"] is True and split["part"] == "held_out"
    assert split["contexts"] == result["contexts"] == len(rows)
    assert split["tokens"] == sum(len(r) for r in rows) and split["scored_tokens"] == result["tokens"]
    return split


def test_eval_scores_only_documents_training_never_read(tiny_model_dir, corpus, tmp_path, seen) -> None:
    model = str(tiny_model_dir("llama"))
    out = tmp_path / "sae"
    common = ["--model", model, "--hook", "resid_post", "--layer", "1", "--corpus", str(corpus), "--out", str(out),
              "--l0-coefficient", "0.01"]
    assert main(["train", *common, *TRAIN]) == 0
    seen[1]["now"] = "eval"
    assert main(["eval", "--sae", str(out), "--corpus", str(corpus), "--tokens", "256"]) == 0
    tokenizer = app.lm.load_lm(model, device="cpu").tokenizer
    split = _check_disjoint(seen, out, tokenizer)
    trained = json.loads((out / "train_config.json").read_text())["data_split"]
    assert trained["part"] == "train" and trained["holdout_every"] == split["holdout_every"] == HOLDOUT
    assert split["corpus"] == trained["corpus"] == str(corpus.resolve())


def test_job_eval_after_resume_is_held_out(tiny_model_dir, corpus, tmp_path, seen) -> None:
    """The admin job's own command lines: train, pause, train --resume, then its eval step (no corpus flag)."""
    model = str(tiny_model_dir("llama"))
    out = tmp_path / "job"
    spec = JobSpec(model=model, corpus=str(corpus), hook="resid_post", layer=1, d_sae=32, tokens=1024,
                   context_size=32, l0_coefficient=0.01)
    first = list(train_step(spec, out, resume=False).argv[3:])
    assert main([*first, *TRAIN, "--stop-at-step", "3"]) == 0
    assert not (out / "cfg.json").exists()  # paused, not finished
    resumed = list(train_step(spec, out, resume=True).argv[3:])
    assert main([*resumed, *TRAIN]) == 0 and (out / "cfg.json").exists()
    seen[1]["now"] = "eval"
    assert main(list(eval_step(spec, out).argv[3:]) + ["--tokens", "256"]) == 0
    tokenizer = app.lm.load_lm(model, device="cpu").tokenizer
    _check_disjoint(seen, out, tokenizer)


def test_eval_refuses_data_that_is_not_held_out(tiny_model_dir, corpus, tmp_path, capsys) -> None:
    model = str(tiny_model_dir("llama"))
    out = tmp_path / "sae"
    common = ["--model", model, "--hook", "resid_post", "--layer", "1", "--corpus", str(corpus), "--out", str(out),
              "--l0-coefficient", "0.01"]
    assert main(["train", *common, *TRAIN[:-2], "--holdout-every", "0", "--tokens", "128"]) == 0
    capsys.readouterr()
    other = tmp_path / "other.txt"
    other.write_text("\n\n".join(TINY_TEXTS))
    cases = [
        (["--sae", str(out)], "nothing held out"),  # trained on every document
        (["--sae", str(out), "--corpus", str(corpus)], "nothing held out"),
        (["--sae", str(out), "--eval-corpus", str(corpus)], "is the corpus this SAE was trained on"),
    ]
    for argv, message in cases:
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (out / "eval.json").exists()
    # A separate corpus is scored whole, and says so.
    for flag in ("--eval-corpus", "--corpus"):
        assert main(["eval", "--sae", str(out), flag, str(other), "--tokens", "64"]) == 0
        split = json.loads((out / "eval.json").read_text())["split"]
        assert split["part"] == "all" and split["corpus"] == str(other.resolve()) and split["contexts"] == 64 // 32
        assert split["disjoint_from_training"] is True
