"""Which corpus documents an evaluation may score: the held-out part of the SAE's training corpus, or a
separate corpus (SPEC §9: eval.json records the held-out split it scored).

Training records in `train_config.json` (key `data_split`, see app.lm.corpus.load_split) the corpus it read
and the document rule (`holdout_every`); evaluation reads that record beside the SAE and packs only the
documents training skipped. Without a record (an SAE trained elsewhere) nothing can be promised: the corpus is
scored whole and eval.json says `"disjoint_from_training": null`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.training.config import CONFIG_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSource:
    """What to evaluate on: a corpus, the part of its document split, and what that means for training."""

    corpus: str
    part: str  # "held_out" (the training corpus's held-out documents) or "all" (a separate corpus)
    holdout_every: int  # the training run's rule (0 for part "all")
    disjoint_from_training: bool | None  # None: unknown (no training record)


def training_record(sae_path: str | os.PathLike) -> dict[str, Any] | None:
    """train_config.json beside the SAE (folder or file inside it), or None when there is none."""
    path = Path(sae_path)
    folder = path if path.is_dir() else path.parent
    file = folder / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: unreadable training record ({e}); fix or remove it") from None
    return record if isinstance(record, dict) else None


def same_corpus(a: str, b: str) -> bool:
    """Whether two corpus specs name the same data (paths compared after resolving, hf: specs as text)."""
    if a.startswith("hf:") or b.startswith("hf:"):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def choose_eval_source(record: dict[str, Any] | None, corpus: str | None, eval_corpus: str | None) -> EvalSource:
    """The evaluation data for `jumpscope eval`; ValueError (one line, what to fix) when it would not be held out.

    - `eval_corpus`: a separate corpus, scored whole (refused when it is the training corpus itself);
    - `corpus` (default: the recorded training corpus): when it is the training corpus, only the documents
      training held out are scored (refused when training held none out); another corpus is scored whole;
    - no training record: `corpus` is scored whole and disjointness is unknown.
    "Same corpus" compares resolved paths: a copy of the training data under another name is not detected.
    """
    record = record or {}
    split = record.get("data_split") or {}
    trained_on = split.get("corpus") or record.get("corpus")
    if eval_corpus is not None:
        if trained_on and same_corpus(eval_corpus, trained_on):
            raise ValueError(f"--eval-corpus {eval_corpus} is the corpus this SAE was trained on; drop it to "
                             "score that corpus's held-out documents")
        return EvalSource(eval_corpus, "all", 0, True if trained_on else None)
    if trained_on is None:
        if corpus is None:
            raise ValueError("pass --corpus PATH or --eval-corpus PATH: no training record beside the SAE names "
                             "its corpus")
        log.warning("no record of this SAE's training corpus: scoring all of %s (disjointness unknown)", corpus)
        return EvalSource(corpus, "all", 0, None)
    if corpus is not None and not same_corpus(corpus, trained_on):
        return EvalSource(corpus, "all", 0, True)  # another corpus than training's: scored whole
    holdout = int(split.get("holdout_every", record.get("holdout_every", 0)) or 0)
    if holdout <= 0:
        raise ValueError(f"the SAE was trained on every document of {trained_on} (nothing held out); pass "
                         "--eval-corpus PATH to score a separate corpus")
    return EvalSource(trained_on, "held_out", holdout, True)
