"""A short train → eval → index round trip through the CLI on SmolLM2 (`--model file.gguf`) with real English text
from Debian's `fortunes` (apt-get install fortunes), the outlier rule recorded and applied the same way throughout."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from app.cli import main
from app.index.store import connect, get_meta
from app.lm.corpus import iter_contexts, iter_texts
from app.lm.hooks import capture
from app.lm.outliers import reference_norm
from tests.real.conftest import gguf_file

pytestmark = pytest.mark.real
log = logging.getLogger(__name__)

FORTUNES = Path("/usr/share/games/fortunes")
FILES = ("fortunes", "computers", "science", "literature", "wisdom", "people")
LAYER, CTX = 15, 64


@pytest.fixture(scope="module")
def fortunes_corpus(tmp_path_factory) -> Path:
    """Several fortune files as a corpus folder, one document per fortune."""
    if not FORTUNES.is_dir():
        pytest.skip("Debian's fortunes are not installed (apt-get install fortunes)")
    folder = tmp_path_factory.mktemp("fortunes")
    for name in FILES:
        src = FORTUNES / name
        if src.is_file():
            docs = [" ".join(d.split()) for d in src.read_text(errors="replace").split("\n%\n") if d.strip()]
            (folder / f"{name}.txt").write_text("\n\n".join(docs))
    if not any(folder.iterdir()):
        pytest.skip("no fortune files found")
    return folder


def test_train_eval_index_on_smollm2(fortunes_corpus, real_models, tmp_path):
    lm, _ = real_models("smollm2")  # converts the file once (cached) before the CLI loads it again
    model = str(gguf_file("smollm2"))
    out = tmp_path / "sae"
    t0 = time.perf_counter()
    assert main(["train", "--model", model, "--hook", "resid_post", "--layer", str(LAYER), "--corpus",
                 str(fortunes_corpus), "--d-sae", "256", "--tokens", "8192", "--batch-size", "256",
                 "--context-size", str(CTX), "--buffer-tokens", "4096", "--out", str(out), "--no-progress"]) == 0
    t1 = time.perf_counter()
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["model_name"] == model and meta["outliers"]["factor"] == 10.0
    assert json.loads((out / "train_config.json").read_text())["outlier_factor"] == 10.0
    train_ref = meta["outliers"]["reference_norm"]
    assert train_ref > 0

    assert main(["eval", "--sae", str(out), "--tokens", "2048", "--batch-size", "8"]) == 0
    t2 = time.perf_counter()
    ev = json.loads((out / "eval.json").read_text())
    assert ev["outliers"]["reference_norm"] == pytest.approx(train_ref)  # eval applies training's rule
    assert ev["split"]["disjoint_from_training"] is True
    assert ev["fvu"] is not None and ev["delta_lm_loss"] is not None

    assert main(["index", "--sae", str(out), "--corpus", str(fortunes_corpus), "--tokens", "4096",
                 "--no-loss-effects", "--top-k", "5"]) == 0
    t3 = time.perf_counter()
    rows = torch.tensor(list(iter_contexts(lm, iter_texts(fortunes_corpus), CTX))[:8])
    with connect(out / "index.db", readonly=True) as conn:
        assert get_meta(conn, "status") == "complete"
        want = reference_norm(lm, rows, capture(lm, rows, None, "resid_post", LAYER))
        assert get_meta(conn, "norm_reference") == pytest.approx(want, rel=1e-5)
    log.info("SmolLM2 round trip: train %.0f s, eval %.0f s, index %.0f s; FVU %.3f, ΔLM loss %.3f, "
             "outliers excluded in eval %d", t1 - t0, t2 - t1, t3 - t2, ev["fvu"], ev["delta_lm_loss"],
             ev["outliers"]["excluded_positions"])
