"""A scaled-down demo build runs end to end: bundle layout, report structure, CLI."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from app.demo.lexicon import CONCEPTS

REPORT_KEYS = {"concepts", "mean_lexical_f1", "l0", "fvu", "delta_lm_loss", "steering_ratio", "lm_val_loss",
               "unigram_loss", "explanations", "explained_lexical_share"}


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from app.demo.bundle import build_demo

    cache = tmp_path_factory.mktemp("cache")
    return cache, build_demo(cache, small=True)


def test_bundle_is_complete_and_loadable(small_bundle):
    from app.lm import load_lm
    from app.sae import load_sae

    cache, bundle = small_bundle
    assert bundle.is_complete()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    sae = load_sae(bundle.sae_dir)
    assert sae.cfg.metadata["model_name"] == str(bundle.model_dir.resolve())  # points at the final place
    assert sae.cfg.metadata["hook_name"] == "blocks.0.hook_resid_post"
    lm = load_lm(sae.cfg.metadata["model_name"])
    assert lm.d_model == sae.d_in
    assert (bundle.sae_dir / "metrics.jsonl").read_text().strip()
    assert json.loads((bundle.sae_dir / "eval.json").read_text())["fvu"] is not None


def test_sae_cfg_names_no_build_folder(small_bundle):
    """cfg.json's paths stay true after the temporary build folder is renamed into place."""
    from app.web.services import Services

    _, bundle = small_bundle
    text = (bundle.sae_dir / "cfg.json").read_text()
    assert ".building-" not in text
    meta = json.loads(text)["metadata"]
    assert meta["model_name"] == str(bundle.model_dir.resolve())
    assert meta["dataset_path"] == str((bundle.root / "corpus" / "train.jsonl").resolve())
    # `jumpscope serve --sae <bundle>/sae` without --model loads the LM named there.
    assert Services._model_name_of(bundle.sae_dir) == str(bundle.model_dir.resolve())


def test_report_structure(small_bundle):
    _, bundle = small_bundle
    report = json.loads(bundle.report_path.read_text())
    assert REPORT_KEYS <= set(report)
    assert set(report["concepts"]) == set(CONCEPTS)
    d_sae = report["sae"]["d_sae"]
    for c in report["concepts"].values():
        assert {"f1", "precision", "recall", "latent"} <= set(c)
        assert 0 <= c["latent"] < d_sae
        assert 0.0 <= c["f1"] <= 1.0 and 0.0 <= c["precision"] <= 1.0 and 0.0 <= c["recall"] <= 1.0
        if c["precision"] + c["recall"] > 0:  # F1 is their harmonic mean
            assert c["f1"] == pytest.approx(2 * c["precision"] * c["recall"] / (c["precision"] + c["recall"]))
    lexical = [c["f1"] for c in report["concepts"].values() if c["kind"] == "lexical"]
    assert report["mean_lexical_f1"] == pytest.approx(sum(lexical) / len(lexical))
    assert report["steering_ratio"] > 0 and report["steering"]["steered_tokens"] > 0
    assert report["unigram_loss"] > 0 and report["lm_val_loss"] > 0
    builtin = report["explanations"]["builtin"]  # the build labelled every latent (app.explain)
    assert report["explained_lexical_share"] == builtin["lexical_share"] and 0.0 <= builtin["lexical_share"] <= 1.0


def test_ensure_demo_reuses_a_complete_bundle(small_bundle):
    from app.demo.bundle import ensure_demo

    cache, bundle = small_bundle
    before = bundle.report_path.stat().st_mtime_ns
    again = ensure_demo(cache, small=True)
    assert again == bundle and bundle.report_path.stat().st_mtime_ns == before


def test_cli_report_json_and_text(small_bundle, capsys):
    cache, _ = small_bundle
    assert main(["demo", "report", "--small", "--json", "--cache-dir", str(cache)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert REPORT_KEYS <= set(report)
    assert main(["demo", "report", "--small", "--cache-dir", str(cache)]) == 0
    text = capsys.readouterr().out
    assert "mean lexical F1" in text and "colour" in text


def test_cli_report_without_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "report", "--cache-dir", str(tmp_path)]) == 2
    assert "jumpscope demo build" in capsys.readouterr().err


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    from app.demo.bundle import default_cache_dir

    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("JUMPSCOPE_CACHE")
    assert default_cache_dir().name == "jumpscope"


def test_a_bundle_of_another_version_is_not_complete(small_bundle, tmp_path):
    """A cached bundle built by older code (other bundle_version, or none) is rebuilt, not served stale."""
    import shutil

    from app.demo.bundle import DemoBundle
    from app.demo.layout import BUILD_FILE, BUNDLE_VERSION

    _, bundle = small_bundle
    copy = DemoBundle.at(shutil.copytree(bundle.root, tmp_path / "demo"))
    assert copy.is_complete()
    info = json.loads((copy.root / BUILD_FILE).read_text())
    for stale in (BUNDLE_VERSION - 1, None):
        info["bundle_version"] = stale
        (copy.root / BUILD_FILE).write_text(json.dumps(info))
        assert not copy.is_complete()
