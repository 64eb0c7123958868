"""Corpus readers and context packing."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.lm.corpus import CorpusError, iter_contexts, iter_texts, load_contexts


def test_reads_text_jsonl_and_parquet_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\n\nsecond one\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from jsonl"}) + "\n\n" + json.dumps({"text": "  "}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet", None, ""]}), tmp_path / "c.parquet")
    assert list(iter_texts(tmp_path)) == ["first paragraph\nstill first", "second one", "from jsonl", "from parquet"]


def test_odd_bytes_are_replaced_not_fatal(tmp_path):
    (tmp_path / "x.txt").write_bytes(b"caf\xe9 \xff ok\x00\n")
    assert list(iter_texts(tmp_path / "x.txt")) == ["caf\ufffd \ufffd ok"]


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_corpus_is_an_error(tmp_path, content):
    (tmp_path / "e.txt").write_text(content)
    with pytest.raises(CorpusError, match="empty"):
        list(iter_texts(tmp_path / "e.txt"))


def test_missing_unsupported_and_bad_jsonl(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        list(iter_texts(tmp_path / "nope"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"\x00")
    with pytest.raises(CorpusError, match="no corpus files"):
        list(iter_texts(tmp_path / "d"))
    (tmp_path / "bad.jsonl").write_text('{"txt": "x"}\n')
    with pytest.raises(CorpusError, match="'text' field"):
        list(iter_texts(tmp_path / "bad.jsonl"))


def test_contexts_start_with_bos_and_have_fixed_length(tmp_path, tiny_tokenizer):
    (tmp_path / "c.txt").write_text("\n\n".join(f"The red fox number {i} jumps." for i in range(50)))
    rows = list(iter_contexts(tiny_tokenizer, iter_texts(tmp_path / "c.txt"), 16))
    assert rows and all(len(r) == 16 and r[0] == tiny_tokenizer.bos_token_id for r in rows)
    assert any(tiny_tokenizer.eos_token_id in r for r in rows)  # documents are separated by EOS
    a = load_contexts(tiny_tokenizer, tmp_path / "c.txt", 16, n_tokens=64, seed=1)
    b = load_contexts(tiny_tokenizer, tmp_path / "c.txt", 16, n_tokens=64, seed=1)
    assert a.shape == (4, 16) and a.equal(b)
    with pytest.raises(CorpusError, match="fewer tokens"):
        load_contexts(tiny_tokenizer, tmp_path / "c.txt", 100000)


def test_hf_dataset_without_the_datasets_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without `datasets`
    with pytest.raises(CorpusError, match="'datasets' package is not installed"):
        list(iter_texts("hf:some/corpus:train"))
