"""Corpus readers and context packing."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.lm.corpus import CorpusError, iter_contexts, iter_texts, load_contexts, load_split


def test_reads_text_jsonl_and_parquet_folders(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\n\nsecond one\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from jsonl"}) + "\n\n" + json.dumps({"text": "  "}) + "\n")
    pq.write_table(pa.table({"text": ["from parquet", None, ""]}), tmp_path / "c.parquet")
    docs = list(iter_texts(tmp_path))  # interleaved across files (see test_folder_documents_are_interleaved…)
    assert sorted(docs) == sorted(["first paragraph\nstill first", "second one", "from jsonl", "from parquet"])
    assert docs.index("first paragraph\nstill first") < docs.index("second one")


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


def test_document_split_packs_disjoint_parts(tmp_path, tiny_tokenizer):
    """Part "held_out" packs documents K−1, 2K−1, …; part "train" the others (reference: list slicing)."""
    (tmp_path / "c.txt").write_text("\n\n".join(f"The red fox number {i} jumps." for i in range(50)))
    docs = list(iter_texts(tmp_path / "c.txt"))
    k = 7
    held = [d for i, d in enumerate(docs) if i % k == k - 1]
    kept = [d for i, d in enumerate(docs) if i % k != k - 1]
    for part, want_docs in (("held_out", held), ("train", kept), ("all", docs)):
        rows, record = load_split(tiny_tokenizer, tmp_path / "c.txt", 16, shuffle=False, part=part, holdout_every=k)
        want = list(iter_contexts(tiny_tokenizer, want_docs, 16))
        assert rows.tolist() == want, part
        assert record["part"] == part and record["contexts"] == len(want) and record["tokens"] == 16 * len(want)
        assert record["documents"] == len(want_docs)  # the whole part was read (no token budget)
    rows, record = load_split(tiny_tokenizer, tmp_path / "c.txt", 16, n_tokens=32, part="held_out", holdout_every=k)
    assert rows.shape == (2, 16) and record["rows"] == [0, 2] and record["document_range"][0] == k - 1
    with pytest.raises(CorpusError, match="held-out documents"):
        load_split(tiny_tokenizer, tmp_path / "c.txt", 16, part="held_out", holdout_every=0)


def test_hf_dataset_without_the_datasets_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without `datasets`
    with pytest.raises(CorpusError, match="'datasets' package is not installed"):
        list(iter_texts("hf:some/corpus:train"))


def _folder_of_files(tmp_path, n_files=4, per_file=12):
    for f in range(n_files):
        (tmp_path / f"f{f}.txt").write_text("\n\n".join(f"doc {d} of file {f}" for d in range(per_file)))
    return [[f"doc {d} of file {f}" for d in range(per_file)] for f in range(n_files)]


def test_folder_documents_are_interleaved_deterministically(tmp_path):
    """Every file contributes early, each file's documents keep their order, nothing is lost or repeated."""
    by_file = _folder_of_files(tmp_path)
    docs = list(iter_texts(tmp_path))
    assert docs == list(iter_texts(tmp_path))  # deterministic
    assert sorted(docs) == sorted(d for f in by_file for d in f)
    assert docs != [d for f in by_file for d in f]  # not file after file
    first = docs[: len(docs) // 4]
    assert {d.rsplit(" ", 1)[1] for d in first} == {str(f) for f in range(len(by_file))}  # all files early
    for f, want in enumerate(by_file):
        assert [d for d in docs if d.endswith(f"file {f}")] == want
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "a.txt").write_text("x\n\ny\n\nz")
    assert list(iter_texts(tmp_path / "single")) == ["x", "y", "z"]  # one file: its own order


def test_interleaved_split_stays_disjoint(tmp_path, tiny_tokenizer):
    """Train and held-out parts of an interleaved folder: disjoint, together the whole corpus, reproducible."""
    _folder_of_files(tmp_path, n_files=3, per_file=20)
    docs = list(iter_texts(tmp_path))
    k = 5
    held = [d for i, d in enumerate(docs) if i % k == k - 1]
    kept = [d for i, d in enumerate(docs) if i % k != k - 1]
    assert not set(held) & set(kept) and len(held) + len(kept) == 60
    for part, want_docs in (("held_out", held), ("train", kept)):
        rows, record = load_split(tiny_tokenizer, tmp_path, 8, shuffle=False, part=part, holdout_every=k)
        assert rows.tolist() == list(iter_contexts(tiny_tokenizer, want_docs, 8)), part
        again, _ = load_split(tiny_tokenizer, tmp_path, 8, shuffle=False, part=part, holdout_every=k)
        assert again.equal(rows)
        assert record["documents"] == len(want_docs)
