"""Property tests for the corpus readers: any bytes in a .txt/.jsonl file, odd encodings, BOMs, CRLF, NULs,
empty lines and multi-megabyte single lines give documents or a `CorpusError` — never another exception —
and packing any documents gives fixed-length BOS rows of valid token ids.
"""

from __future__ import annotations

import codecs
import json
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.lm.corpus import CorpusError, iter_contexts, iter_texts

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Text made of the awkward parts: line breaks of every style, NUL, BOM, blanks, unicode whitespace, non-ASCII.
awkward_text = st.lists(
    st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\x00", "\ufeff", " ", "\t", "\x0c", "\u2028", "é", "日本",
                     "😀", "word", "The red fox", "<script>"]) | st.text(max_size=6),
    max_size=40,
).map("".join)


def _read(name: str, data: bytes) -> list[str] | CorpusError:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            docs = list(iter_texts(path))
        except CorpusError as e:
            assert str(e).strip()
            return e
    assert all(isinstance(t, str) and t.strip() for t in docs)
    return docs


def _expected_docs(text: str) -> list[str]:
    """Paragraphs of `text` as the reader promises them: blank-line separated, NULs and one leading BOM dropped."""
    text = text.removeprefix("\ufeff")
    docs, para = [], []
    for line in LINE_BREAK.split(text):
        line = line.replace("\x00", "")
        if line.strip():
            para.append(line)
        elif para:
            docs.append("\n".join(para))
            para = []
    if para:
        docs.append("\n".join(para))
    return docs


@FUZZ
@given(data=st.binary(max_size=2000))
def test_txt_any_bytes(data):
    out = _read("c.txt", data)
    if isinstance(out, list):
        assert all("\x00" not in t and "\r" not in t for t in out)


@FUZZ
@given(text=awkward_text)
def test_txt_utf8_roundtrip_of_paragraphs(text):
    expected = _expected_docs(text)
    out = _read("c.txt", text.encode("utf-8", "surrogatepass"))
    if not expected:
        assert isinstance(out, CorpusError) and "empty" in str(out)
    else:
        assert out == expected


@FUZZ
@given(text=awkward_text, encoding=st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32",
                                                    "shift_jis", "utf-8-sig"]))
def test_txt_other_encodings_never_crash(text, encoding):
    data = text.encode(encoding, errors="replace")
    _read("c.txt", data)


def test_bom_crlf_and_blank_lines(tmp_path):
    data = codecs.BOM_UTF8 + b"first line\r\nsame doc\r\n\r\n \t \r\n\r\nsecond\x00 doc\r\n\r\n\r\n"
    assert _read("c.txt", data) == ["first line\nsame doc", "second doc"]
    jsonl = codecs.BOM_UTF8 + b'{"text": "a"}\r\n\r\n{"text": "b"}\r\n'
    assert _read("c.jsonl", jsonl) == ["a", "b"]


def test_multi_megabyte_single_line(tmp_path):
    line = ("abc " * 2_000_000).encode()  # 8 MB, no line break at all
    out = _read("c.txt", line)
    assert isinstance(out, list) and len(out) == 1
    assert len(out[0]) == len(line)  # the whole line, one document (trailing spaces kept)


@FUZZ
@given(data=st.binary(max_size=800))
def test_jsonl_any_bytes(data):
    _read("c.jsonl", data)


@FUZZ
@given(lines=st.lists(st.text(max_size=30) | st.none() | st.integers() | st.lists(st.text(max_size=3)),
                      max_size=8))
def test_jsonl_any_json_lines(lines):
    data = "\n".join(json.dumps({"text": v}) for v in lines).encode()
    out = _read("c.jsonl", data)
    if all(isinstance(v, str) for v in lines) and any(v.strip() for v in lines):
        assert isinstance(out, list) and len(out) == sum(1 for v in lines if v.strip())


@FUZZ
@given(texts=st.lists(st.text(max_size=40) | st.none(), max_size=8))
def test_parquet_any_strings(texts):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.parquet"
        pq.write_table(pa.table({"text": pa.array(texts, type=pa.string())}), path)
        try:
            out = list(iter_texts(path))
        except CorpusError:
            assert not any(isinstance(t, str) and t.strip() for t in texts)
        else:
            assert out == [t for t in texts if isinstance(t, str) and t.strip()]


@FUZZ
@given(data=st.binary(max_size=600))
def test_parquet_garbage(data):
    _read("c.parquet", data)


# --- packing -----------------------------------------------------------------------------------------
@FUZZ
@given(texts=st.lists(awkward_text | st.text(max_size=50), max_size=12), context_size=st.integers(2, 24))
def test_contexts_from_any_text(tiny_tokenizer, texts, context_size):
    rows = list(iter_contexts(tiny_tokenizer, texts, context_size))
    vocab = len(tiny_tokenizer)
    for row in rows:
        assert len(row) == context_size and row[0] == tiny_tokenizer.bos_token_id
        assert all(isinstance(i, int) and 0 <= i < vocab for i in row)


def test_lone_surrogates_from_jsonl_can_be_tokenized(tmp_path, tiny_tokenizer):
    """JSON can encode a lone surrogate ("\\ud800"); the tokenizer cannot take one, so the reader must not pass it."""
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "bad \ud800 half"}) + "\n")
    docs = list(iter_texts(tmp_path / "s.jsonl"))
    assert docs and all(not re.search("[\ud800-\udfff]", t) for t in docs)
    assert list(iter_contexts(tiny_tokenizer, docs * 20, 8))


def test_huge_line_packs_into_rows(tmp_path, tiny_tokenizer):
    (tmp_path / "big.txt").write_text("red fox " * 40_000)  # one 320 kB document
    rows = list(iter_contexts(tiny_tokenizer, iter_texts(tmp_path / "big.txt"), 64))
    assert len(rows) > 100 and all(len(r) == 64 for r in rows)


@pytest.mark.parametrize("context_size", [0, 1, -5])
def test_too_small_context_is_a_clear_error(tiny_tokenizer, context_size):
    with pytest.raises(CorpusError, match="too small"):
        list(iter_contexts(tiny_tokenizer, ["hello world"], context_size))
