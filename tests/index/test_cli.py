"""`jumpscope index` end to end through the CLI, and one-line errors for bad input."""

from __future__ import annotations

import json

from app.cli import main
from app.index.service import index_summary, latent_dashboard


def test_cli_builds_index_beside_the_sae(tmp_path, tiny_sae, corpus_file, capsys):
    sae_dir = tmp_path / "sae"
    tiny_sae.save(str(sae_dir))
    (sae_dir / "eval.json").write_text(json.dumps({"fvu": 0.25, "l0": 12.0}))
    args = ["index", "--sae", str(sae_dir), "--corpus", str(corpus_file), "--tokens", "128", "--device", "cpu",
            "--context-size", "32", "--batch-contexts", "2", "--top-k", "3", "--no-loss-effects"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    db = sae_dir / "index.db"
    assert out["index"] == str(db) and out["status"] == "complete" and out["d_sae"] == 48
    s = index_summary(db)
    assert s["metrics"] == {"fvu": 0.25, "l0": 12.0} and s["tokens_total"] == 128
    assert s["config"]["top_k"] == 3
    d = latent_dashboard(db, 0)
    assert all(e["loss_effect"] is None for e in d["top_examples"])
    assert main(args) == 0  # nothing new to do: same answer, no error


def test_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_sae, corpus_file, capsys):
    sae_dir = tmp_path / "sae"
    tiny_sae.save(str(sae_dir))
    base = ["index", "--sae", str(sae_dir), "--tokens", "64", "--device", "cpu", "--context-size", "32"]
    assert main([*base, "--corpus", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jumpscope index: error:") and "missing.txt" in err[0]
    assert main(["index", "--sae", str(tmp_path / "nope"), "--corpus", str(corpus_file), "--tokens", "64"]) == 2
    assert main([*base, "--corpus", str(corpus_file), "--context-size", "4096"]) == 2
    assert "exceeds" in capsys.readouterr().err
