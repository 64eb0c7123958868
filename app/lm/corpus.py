"""Corpus → token contexts: read text files, folders, JSONL and Parquet, pack into fixed-length rows.

Each row starts with BOS; documents are separated by EOS. Shuffling is deterministic by seed.

Corpus order: a folder's documents are interleaved, not read file after file: the files are shuffled with a fixed
seed (ORDER_SEED) and up to LANES of them are read at once, each next document drawn from a seeded random one
of those. A token budget therefore samples every file, not the alphabetically first ones. The order is a pure
function of the folder's contents (no run seed), so the split below and the index's row numbers stay stable.

Train / held-out split (by document, so it holds for any tokenizer and context size): document i of a corpus
(0-based, in `iter_texts` order) is held out iff `holdout_every > 0` and i % holdout_every == holdout_every − 1.
Training packs only the other documents (part "train"); `jumpscope eval` packs only the held-out ones
(part "held_out"). Part "all" packs every document (an evaluation corpus separate from training, the index).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".text"}
SUPPORTED = ", ".join(sorted(TEXT_SUFFIXES | {".jsonl", ".parquet"}))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

ORDER_SEED = 0  # the fixed seed of a folder's document interleaving
LANES = 64  # files read at once while interleaving (bounds open files)
HOLDOUT_EVERY = 20  # default: every 20th document (5 %) is held out of training for evaluation
PARTS = ("all", "train", "held_out")


class CorpusError(ValueError):
    """A corpus that cannot be read (missing, empty, unsupported); the message says what to fix."""


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.suffix in (".jsonl", ".parquet"))
    )
    if not files:
        raise CorpusError(f"{path}: folder holds no corpus files ({SUPPORTED})")
    return files


def _read_text_file(path: Path) -> Iterator[str]:
    """Paragraphs (blank-line separated), streamed; undecodable bytes are replaced, not fatal."""
    para: list[str] = []
    # utf-8-sig: a leading byte-order mark is dropped, not fed to the tokenizer as a character.
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as fh:
        for line in fh:
            line = line.rstrip("\n").replace("\x00", "")
            if line.strip():
                para.append(line)
            elif para:
                yield "\n".join(para)
                para = []
    if para:
        yield "\n".join(para)


def _read_jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{n}: each JSONL line needs a string 'text' field")
            if text.strip():
                # JSON can escape a lone surrogate ("\\ud800"), which no tokenizer accepts.
                yield _LONE_SURROGATE.sub("\ufffd", text)


def _read_parquet(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise CorpusError(f"{path}: unreadable Parquet file ({e})") from None
    if "text" not in pf.schema_arrow.names:
        raise CorpusError(f"{path}: Parquet file has no 'text' column (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _read_hf(spec: str) -> Iterator[str]:
    """`hf:NAME[:split]` through the optional `datasets` package (needs the hub, or its local cache)."""
    try:
        import datasets
    except ImportError:
        raise CorpusError(f"{spec}: the 'datasets' package is not installed; pip install datasets") from None
    name, _, split = spec.removeprefix("hf:").partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as e:
        raise CorpusError(f"{spec}: cannot load dataset ({e})") from None
    for row in ds:
        text = row.get("text") if isinstance(row, dict) else None
        if isinstance(text, str) and text.strip():
            yield text


def iter_texts(path: str | os.PathLike) -> Iterator[str]:
    """Documents of a corpus, in a fixed order. Raises CorpusError when missing, unsupported or empty."""
    spec = str(path)
    if spec.startswith("hf:"):
        source: Iterable[str] = _read_hf(spec)
    else:
        p = Path(spec)
        if not p.exists():
            raise CorpusError(f"{p}: corpus not found")
        files = _files(p)
        for f in files:
            if f.suffix not in TEXT_SUFFIXES | {".jsonl", ".parquet"}:
                raise CorpusError(f"{f}: unsupported corpus file type (use {SUPPORTED})")
        source = _interleave(files) if len(files) > 1 else _chain(files)
    empty = True
    for text in source:
        empty = False
        yield text
    if empty:
        raise CorpusError(f"{spec}: corpus is empty (no non-blank text)")


def _read_file(f: Path) -> Iterator[str]:
    if f.suffix == ".jsonl":
        return _read_jsonl(f)
    if f.suffix == ".parquet":
        return _read_parquet(f)
    return _read_text_file(f)


def _chain(files: list[Path]) -> Iterator[str]:
    for f in files:
        yield from _read_file(f)


def _interleave(files: list[Path], seed: int = ORDER_SEED, lanes: int = LANES) -> Iterator[str]:
    """Documents of several files mixed: files in a seeded shuffled order, `lanes` of them open at a time, each
    next document taken from a seeded random open file (documents of one file keep their order)."""
    rng = random.Random(seed)
    queue = list(files)
    rng.shuffle(queue)
    queue.reverse()  # pop() takes the next file of the shuffled order
    active: list[Iterator[str]] = []
    while queue or active:
        while queue and len(active) < lanes:
            active.append(_read_file(queue.pop()))
        i = rng.randrange(len(active))
        doc = next(active[i], None)
        if doc is None:
            active.pop(i)
        else:
            yield doc


def _tokenizer(lm_or_tokenizer: Any):
    return getattr(lm_or_tokenizer, "tokenizer", lm_or_tokenizer)


def iter_contexts(
    lm_or_tokenizer: Any, texts: Iterable[str], context_size: int, prepend_bos: bool = True
) -> Iterator[list[int]]:
    """Pack documents into rows of exactly `context_size` tokens: [BOS] + tokens, EOS between documents.

    The tail that does not fill a whole row is dropped, as in SAELens' packing.
    """
    tok = _tokenizer(lm_or_tokenizer)
    bos = tok.bos_token_id if prepend_bos else None
    eos = tok.eos_token_id
    body = context_size - (1 if bos is not None else 0)
    if body < 1:
        raise CorpusError(f"context_size {context_size} is too small")
    buf: list[int] = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        buf.extend(ids)
        if eos is not None:
            buf.append(eos)
        while len(buf) >= body:
            row, buf = buf[:body], buf[body:]
            yield ([bos] if bos is not None else []) + row


def is_held_out(index: int, holdout_every: int) -> bool:
    """Whether corpus document `index` (0-based, corpus order) is held out of training."""
    return holdout_every > 0 and index % holdout_every == holdout_every - 1


def split_rule(holdout_every: int) -> str:
    """The split rule in words (recorded in train_config.json and eval.json)."""
    if holdout_every <= 0:
        return "no document held out"
    return f"document i (0-based, corpus order) is held out iff i % {holdout_every} == {holdout_every - 1}"


@dataclass
class _PartReader:
    """The documents of one part of the split, remembering which corpus indices were read."""

    texts: Iterable[str]
    part: str
    holdout_every: int
    indices: list[int] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        for i, text in enumerate(self.texts):
            held = is_held_out(i, self.holdout_every)
            if self.part == "all" or (self.part == "held_out") == held:
                self.indices.append(i)
                yield text


def load_split(
    lm_or_tokenizer: Any,
    path: str | os.PathLike,
    context_size: int,
    n_tokens: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    part: str = "all",
    holdout_every: int = HOLDOUT_EVERY,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Contexts of one part of the document split (see the module docstring) and a record of what was read.

    The record: corpus, part, rule, `documents` (how many documents of the part were packed, and the corpus
    index range [first, last + 1) they came from), `rows` ([0, N): the first N packed rows of the part, before
    the shuffle), `contexts`, `context_size` and `tokens` (N × context_size). Raises CorpusError when the part
    gives less than one context.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    reader = _PartReader(iter_texts(path), part, holdout_every)
    rows: list[list[int]] = []
    need = None if n_tokens is None else max(1, -(-n_tokens // context_size))
    for row in iter_contexts(lm_or_tokenizer, reader, context_size):
        rows.append(row)
        if need is not None and len(rows) >= need:
            break
    if not rows:
        what = "" if part == "all" else f"its {part.replace('_', '-')} documents ({split_rule(holdout_every)}) give "
        raise CorpusError(f"{path}: {what}fewer tokens than one context of {context_size}")
    if need is not None and len(rows) < need:
        log.warning("%s: only %d tokens available (asked for %d)", path, len(rows) * context_size, n_tokens)
    if shuffle:
        random.Random(seed).shuffle(rows)
    spec = str(path)
    record = {
        "corpus": spec if spec.startswith("hf:") else str(Path(spec).resolve()),
        "part": part,
        "holdout_every": holdout_every,
        "rule": split_rule(holdout_every),
        "documents": len(reader.indices),
        "document_range": [reader.indices[0], reader.indices[-1] + 1],
        "rows": [0, len(rows)],
        "contexts": len(rows),
        "context_size": context_size,
        "tokens": len(rows) * context_size,
    }
    return torch.tensor(rows, dtype=torch.long), record


def load_contexts(
    lm_or_tokenizer: Any,
    path: str | os.PathLike,
    context_size: int,
    n_tokens: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    part: str = "all",
    holdout_every: int = HOLDOUT_EVERY,
) -> torch.Tensor:
    """LongTensor [N, context_size] of packed rows (enough for `n_tokens` when given), shuffled by seed.

    `part` picks the documents: "all" (default), "train" or "held_out" (see the module docstring)."""
    return load_split(lm_or_tokenizer, path, context_size, n_tokens, seed, shuffle, part, holdout_every)[0]
