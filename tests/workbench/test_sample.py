"""Where the workbench sample comes from: the training record's held-out split, the index corpus, an explicit
corpus; a bundle moved after it was built (the demo) still finds its corpus; nothing → a clear error."""

from __future__ import annotations

import json
import shutil

import pytest

from app.workbench.sample import SampleUnavailable, choose_sample, load_sample


def test_training_record_held_out_split_relocated_after_a_move(tmp_path, wb_corpus, tiny_lm):
    built = tmp_path / ".building" / "bundle"
    (built / "corpus").mkdir(parents=True)
    shutil.copy(wb_corpus, built / "corpus" / "train.txt")
    (built / "sae").mkdir()
    (built / "sae" / "train_config.json").write_text(json.dumps({
        "out": str(built / "sae"), "data_split": {"corpus": str(built / "corpus" / "train.txt"), "holdout_every": 4}}))
    final = tmp_path / "bundle"
    shutil.move(built, final)
    spec = choose_sample(final / "sae", 32, 128)
    assert spec.corpus == str((final / "corpus" / "train.txt").resolve())
    assert (spec.part, spec.holdout_every, spec.origin, spec.disjoint_from_training) == \
        ("held_out", 4, "training record", True)
    contexts, split = load_sample(tiny_lm, spec)
    assert contexts.shape == (4, 32) and split["part"] == "held_out" and split["origin"] == "training record"


def test_index_corpus_then_explicit_then_nothing(tmp_path, wb_corpus):
    folder = tmp_path / "sae"
    folder.mkdir()
    with pytest.raises(SampleUnavailable, match="jumpscope index"):
        choose_sample(folder, 32, 64)
    spec = choose_sample(folder, 32, 64, corpus=str(wb_corpus))
    assert (spec.origin, spec.part, spec.disjoint_from_training) == ("explicit", "all", None)
    with pytest.raises(SampleUnavailable, match="not found"):
        choose_sample(folder, 32, 64, corpus=str(tmp_path / "missing.txt"))

