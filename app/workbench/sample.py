"""Which tokens the workbench scores: the SAE's held-out split when its training record names one, else a
sample of the corpus its index was built on, or a corpus given explicitly.

The choice mirrors `jumpscope eval` (app.training.heldout): the training corpus's held-out documents when
train_config.json records a split, a separate corpus scored whole otherwise. The sample is the first rows of
that part (packed like everywhere else), so the same settings always give the same tokens.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from app.lm.corpus import CorpusError, load_split
from app.lm.model import LanguageModel
from app.training.heldout import choose_eval_source, training_record

log = logging.getLogger(__name__)

DEFAULT_TOKENS = 2048  # a small sample: the what-if answers from it in well under a second on the demo
DEFAULT_CONTEXT = 128


class SampleUnavailable(ValueError):
    """No corpus to draw the workbench sample from (the message says what to pass)."""


@dataclass(frozen=True)
class SampleSpec:
    """Where the sample comes from: corpus, document part, context size and token budget."""

    corpus: str
    part: str  # "held_out" (the training corpus's held-out documents) or "all"
    holdout_every: int
    context_size: int
    tokens: int
    origin: str  # "explicit", "training record" or "index corpus"
    disjoint_from_training: bool | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _exists(corpus: str) -> bool:
    return corpus.startswith("hf:") or Path(corpus).exists()


def relocated(corpus: str, recorded_sae: str | None, sae_folder: Path) -> str:
    """`corpus` as recorded, or — when it is gone and sat beside the SAE when that was recorded (a bundle built
    in a temporary folder, then moved, like the demo) — the same relative path beside the SAE folder now."""
    if _exists(corpus) or not recorded_sae:
        return corpus
    try:
        rel = Path(corpus).relative_to(Path(recorded_sae).parent)
    except ValueError:
        return corpus
    moved = Path(sae_folder).resolve().parent / rel
    return str(moved) if moved.exists() else corpus


def _relocate_record(record: dict[str, Any], sae_folder: Path) -> dict[str, Any]:
    """The training record with its corpus paths relocated (see `relocated`) against its recorded `out`."""
    out = record.get("out")
    record = dict(record)
    if isinstance(record.get("corpus"), str):
        record["corpus"] = relocated(record["corpus"], out, sae_folder)
    split = record.get("data_split")
    if isinstance(split, dict) and isinstance(split.get("corpus"), str):
        record["data_split"] = {**split, "corpus": relocated(split["corpus"], out, sae_folder)}
    return record


def _index_corpus(index_db: Path | None, sae_folder: Path) -> str | None:
    """The corpus an index recorded (indexes of schema v2 on, relocated like a training record), or None."""
    if index_db is None or not Path(index_db).is_file():
        return None
    from app.index.service import index_corpus, index_summary

    corpus = index_corpus(index_db)
    return relocated(corpus, index_summary(index_db).get("sae_path"), sae_folder) if corpus else None


def choose_sample(sae_folder: str | os.PathLike, context_size: int | None = None, tokens: int = DEFAULT_TOKENS,
                  corpus: str | None = None, index_db: str | os.PathLike | None = None) -> SampleSpec:
    """The sample for an SAE folder: `corpus` when given (scored whole, or its held-out part when it is the
    training corpus), else the held-out split of the training record, else the index's corpus.

    Raises SampleUnavailable when none of them exists on this machine.
    """
    if tokens < 1:
        raise ValueError(f"the sample needs at least 1 token, got {tokens}")
    ctx = int(context_size or DEFAULT_CONTEXT)
    record = training_record(sae_folder)
    if record:
        record = _relocate_record(record, Path(sae_folder))
    tried: list[str] = []
    if corpus is not None:
        if not _exists(corpus):
            raise SampleUnavailable(f"corpus {corpus} not found")
        try:
            src = choose_eval_source(record, corpus, None)
        except ValueError:  # the training corpus with nothing held out: score it whole, say so
            return SampleSpec(corpus, "all", 0, ctx, tokens, "explicit", False)
        return SampleSpec(src.corpus, src.part, src.holdout_every, ctx, tokens, "explicit",
                          src.disjoint_from_training)
    if record:
        try:
            src = choose_eval_source(record, None, None)
        except ValueError as e:
            tried.append(f"training record: {e}")
        else:
            if _exists(src.corpus):
                return SampleSpec(src.corpus, src.part, src.holdout_every, ctx, tokens, "training record",
                                  src.disjoint_from_training)
            tried.append(f"training record: corpus {src.corpus} not found")
    index_corpus = _index_corpus(Path(index_db) if index_db else None, Path(sae_folder))
    if index_corpus and _exists(index_corpus):
        trained_on = ((record or {}).get("data_split") or {}).get("corpus") or (record or {}).get("corpus")
        disjoint = None if not trained_on else not _same(index_corpus, trained_on)
        return SampleSpec(index_corpus, "all", 0, ctx, tokens, "index corpus", disjoint)
    tried.append("index: no recorded corpus" if not index_corpus else f"index corpus {index_corpus} not found")
    raise SampleUnavailable("no sample to score the workbench on (" + "; ".join(tried) + "): train the SAE with "
                            "`jumpscope train` (held-out split), index it with `jumpscope index`, or pass a corpus")


def _same(a: str, b: str) -> bool:
    from app.training.heldout import same_corpus

    return same_corpus(a, b)


def load_sample(lm: LanguageModel, spec: SampleSpec) -> tuple[torch.Tensor, dict[str, Any]]:
    """The sample's contexts [N, T] (the first rows of the part, unshuffled) and the split record."""
    ctx = spec.context_size
    if lm.max_positions and ctx > lm.max_positions:
        ctx = lm.max_positions
    try:
        contexts, split = load_split(lm, spec.corpus, ctx, n_tokens=spec.tokens, shuffle=False, part=spec.part,
                                     holdout_every=spec.holdout_every)
    except CorpusError as e:
        raise SampleUnavailable(f"cannot read the sample: {e}") from None
    return contexts, {**split, "origin": spec.origin, "disjoint_from_training": spec.disjoint_from_training}
