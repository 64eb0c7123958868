"""`jumpscope serve`: settings from the command line and environment, the demo when nothing is named."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from app.cli import build_parser, main


def _args(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_serve_runs_uvicorn_with_the_app(monkeypatch, sae_folder):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--sae", str(sae_folder), "--device", "cpu", "--port", "8123"]) == 0
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    assert seen["app"].state.services.ids() == ["tiny-sae"]


def test_environment_and_flags(monkeypatch, tmp_path, sae_folder):
    from app.cli.serve import build_settings

    monkeypatch.setenv("JUMPSCOPE_MAX_NEW_TOKENS", "7")
    monkeypatch.setenv("JUMPSCOPE_ADMIN_TOKEN", "s3cret")
    s = build_settings(_args("--sae", str(sae_folder), "--data-dir", str(tmp_path)))
    assert s.max_new_tokens == 7 and s.admin_token_value() == "s3cret" and s.data_dir == tmp_path
    assert "s3cret" not in repr(s)


def test_bad_input_exits_2(capsys, tmp_path):
    assert main(["serve", "--sae", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--model", "x", "--device", "tpu"]) == 2


def test_no_arguments_serves_the_demo(monkeypatch, tmp_path):
    from app.cli.serve import build_settings

    fake = types.ModuleType("app.demo.bundle")
    calls = []

    def ensure_demo(cache_dir=None, progress=None):
        calls.append(cache_dir)
        return types.SimpleNamespace(root=tmp_path, model_dir=tmp_path / "model", sae_dir=tmp_path / "sae",
                                     report_path=tmp_path / "r.md")

    (tmp_path / "sae").mkdir()
    fake.ensure_demo = ensure_demo
    monkeypatch.setitem(sys.modules, "app.demo.bundle", fake)
    monkeypatch.delenv("JUMPSCOPE_MODEL", raising=False)
    monkeypatch.delenv("JUMPSCOPE_SAES", raising=False)
    monkeypatch.delenv("JUMPSCOPE_CACHE", raising=False)  # build_settings exports --cache; restored after the test
    s = build_settings(_args("--demo-cache", str(tmp_path)))
    assert calls == [tmp_path] and s.model == str(tmp_path / "model") and s.saes == [Path(tmp_path / "sae")]


def test_cache_and_train_gpus_are_settings(monkeypatch, tmp_path, sae_folder):
    """JUMPSCOPE_CACHE and JUMPSCOPE_TRAIN_GPUS are Settings fields; serve exports the cache for the core."""
    from app.cli.serve import build_settings
    from app.runtime import cache_dir

    monkeypatch.setenv("JUMPSCOPE_TRAIN_GPUS", "2")
    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path / "env-cache"))
    s = build_settings(_args("--sae", str(sae_folder)))
    assert s.train_gpus == 2 and s.cache == tmp_path / "env-cache" and cache_dir() == tmp_path / "env-cache"
    s = build_settings(_args("--sae", str(sae_folder), "--cache", str(tmp_path / "flag-cache")))
    assert s.cache == tmp_path / "flag-cache" and cache_dir() == tmp_path / "flag-cache"
    monkeypatch.setenv("JUMPSCOPE_TRAIN_GPUS", "0")
    with pytest.raises(Exception, match="train_gpus"):
        build_settings(_args("--sae", str(sae_folder)))
