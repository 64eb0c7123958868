"""`jumpscope explain` through the CLI: writes explanations and scores, resumes, subsets, and bad input is one
line on stderr with exit code 2."""

from __future__ import annotations

import json
from contextlib import closing

from app.cli import main
from app.explain import store


def _out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_explain_subset_then_all_then_nothing(sae_dir, capsys):
    assert main(["explain", "--sae", str(sae_dir), "--latents", "0-3,20"]) == 0
    first = _out(capsys)
    assert first["latents"] == 5 and first["explained"] + first["dead"] == 5 and first["failed"] == 0
    with closing(store.open_db(sae_dir / "index.db", readonly=True)) as conn:
        done = store.done_latents(conn, "builtin", "builtin-1")
        assert done <= {0, 1, 2, 3, 20} and len(done) == first["explained"]
        assert store.scored_latents(conn, "builtin", "builtin", "f1") == done  # builtin always scores
    from app.jobs.explain_job import read_progress

    progress = sae_dir / ".explain_progress.json"
    assert read_progress(sae_dir) is None  # not written yet
    assert main(["explain", "--sae", str(sae_dir), "--progress-file", str(progress)]) == 0
    assert json.loads(progress.read_text()) == {"done": 24, "total": 24} and read_progress(sae_dir) == 1.0
    second = _out(capsys)
    assert second["skipped"] == first["explained"] and second["explained"] + second["dead"] + \
        second["skipped"] == 24
    assert main(["explain", "--sae", str(sae_dir), "--score"]) == 0
    assert _out(capsys)["explained"] == 0


def test_bad_input_is_one_line_exit_2(sae_dir, tmp_path, capsys):
    cases = [
        (["--sae", str(tmp_path / "nope")], "not an SAE folder"),
        (["--sae", str(tmp_path)], "no latent index"),
        (["--sae", str(sae_dir), "--latents", "5-2"], "ends before"),
        (["--sae", str(sae_dir), "--latents", "0-99"], "out of range"),
        (["--sae", str(sae_dir), "--explainer", "nosuch"], "unknown explainer"),
        (["--sae", str(sae_dir), "--endpoint", "http://x"], "apply to --explainer"),
    ]
    for args, msg in cases:
        assert main(["explain", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("jumpscope explain: error:") and msg in err[0], (args, err)
    with closing(store.open_db(sae_dir / "index.db", readonly=True)) as conn:
        assert store.explainers(conn) == {}  # nothing was written by the refused runs


def test_unfinished_index_is_refused(sae_dir, capsys):
    import sqlite3

    with closing(sqlite3.connect(sae_dir / "index.db")) as raw, raw:
        raw.execute("DELETE FROM latents")
        raw.execute("UPDATE meta SET value = '\"building\"' WHERE key = 'status'")
    assert main(["explain", "--sae", str(sae_dir)]) == 2
    assert "not finalised" in capsys.readouterr().err
