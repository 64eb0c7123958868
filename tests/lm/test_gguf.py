"""`--model file.gguf`: converted once into a folder keyed by the file's SHA-256, then loaded like any folder.

The conversion itself (transformers' GGUF reader) is replaced here by copying a tiny saved model, so this runs in
the fast tier without the `gguf` package; tests/real/ converts the real SmolLM2 and Gemma 3 files and compares
their logits with plain transformers.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from app.lm import gguf as gguf_mod
from app.lm import load_lm
from app.lm.gguf import SOURCE_FILE, converted_folder, is_gguf


@pytest.fixture()
def fake_convert(monkeypatch, tmp_path, tiny_model_dir):
    """_convert replaced by a copy of the tiny Llama; records every call."""
    calls = []

    def convert(path, out):
        calls.append(path)
        shutil.copytree(tiny_model_dir("llama"), out, dirs_exist_ok=True)

    monkeypatch.setattr(gguf_mod, "_convert", convert)
    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path / "cache"))
    return calls


def test_converted_once_per_content_and_keyed_by_hash(fake_convert, tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF fake one")
    folder = converted_folder(f)
    assert folder == tmp_path / "cache" / "gguf" / hashlib.sha256(b"GGUF fake one").hexdigest()
    assert (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file()
    assert converted_folder(f) == folder and len(fake_convert) == 1  # cached
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(b"GGUF fake one")
    assert converted_folder(copy) == folder and len(fake_convert) == 1  # same content, same folder
    f.write_bytes(b"GGUF fake two")
    assert converted_folder(f) != folder and len(fake_convert) == 2
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.name.startswith(".")]  # no temp left


def test_failed_conversion_leaves_nothing_and_missing_file_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path / "cache"))

    def broken(path, out):
        (out / "half").mkdir(parents=True)
        raise ValueError(f"{path}: transformers cannot read this GGUF file (bad magic)")

    monkeypatch.setattr(gguf_mod, "_convert", broken)
    f = tmp_path / "bad.gguf"
    f.write_bytes(b"not gguf")
    with pytest.raises(ValueError, match="cannot read"):
        converted_folder(f)
    assert not any((tmp_path / "cache" / "gguf").iterdir())
    with pytest.raises(ValueError, match="GGUF file not found"):
        converted_folder(tmp_path / "missing.gguf")


def test_load_lm_of_a_gguf_file_loads_the_converted_folder_at_the_chosen_dtype(fake_convert, tmp_path,
                                                                                tiny_model_dir):
    f = tmp_path / "tiny.GGUF"
    f.write_bytes(b"GGUF tiny")
    assert is_gguf(f)
    lm = load_lm(f, device="cpu", dtype="bfloat16")
    assert lm.name == str(f) and lm.dtype == torch.bfloat16
    ref = load_lm(tiny_model_dir("llama"), device="cpu")
    ids = ref.tokenize(["The red fox jumps."]).input_ids
    torch.testing.assert_close(lm.model(ids).logits.float(), ref.model(ids).logits, atol=0.1, rtol=0.05)
    assert load_lm(f, device="cpu").dtype == torch.float32 and len(fake_convert) == 1


def test_a_real_tiny_gguf_file_converts_to_what_transformers_reads(tmp_path, monkeypatch, tiny_tokenizer):
    """A GGUF file written with the `gguf` package: load_lm's cached conversion gives transformers' own logits."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from tests.lm.tiny_gguf import write_tiny_gguf

    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer)
    lm = load_lm(path, device="cpu")
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    text = "The red fox jumps over the lazy dog."
    ids = lm.tokenize([text]).input_ids
    assert ids[0, 1:].tolist() == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(lm.model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)
    assert lm.n_layers == 2 and lm.d_model == 32
