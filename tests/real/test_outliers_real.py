"""SmolLM2's attention sink: position 0 of every sequence reaches a residual norm ~140× the median (~25,000 vs ~175
at layer 15). With the chat BOS `<|im_start|>` first, that position is special; in a sequence without it
(`prepend_bos=False`, activations from another pipeline) it is an ordinary token, and only the outlier rule
(app/lm/outliers.py) keeps it out. Training, eval and the index must exclude exactly what a brute-force mask says.
"""

from __future__ import annotations

import logging

import pytest
import torch

from app.lm.hooks import capture, hook_name
from app.lm.outliers import OUTLIER_FACTOR, keep_mask, reference_norm
from app.training.activations import LMSource
from app.training.evaluate import evaluate_sae
from tests.steering.helpers import make_sae

pytestmark = pytest.mark.real
log = logging.getLogger(__name__)

CHATS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of "
    "France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris, a city on the Seine.<|im_end|>\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\nWaves fold into foam, "
    "salt wind carries gull voices, the tide keeps its time.<|im_end|>\n",
]
LAYER = 15


def _rows(lm, texts, prepend_bos):
    rows = [lm.token_ids(t, prepend_bos=prepend_bos) if prepend_bos else
            lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = min(len(r) for r in rows)
    return torch.tensor([r[:width] for r in rows])


def test_chat_bos_carries_the_sink_and_is_special(real_models):
    lm, _ = real_models("smollm2")
    ids = _rows(lm, CHATS, prepend_bos=False)  # the chats start with <|im_start|> themselves (no double BOS)
    assert (ids[:, 0] == lm.tokenizer.convert_tokens_to_ids("<|im_start|>")).all()
    norms = capture(lm, ids, None, "resid_post", LAYER).norm(dim=-1)
    special = lm.special_mask(ids)
    median = float(norms[~special].median())
    log.info("SmolLM2 layer %d, chat rows: <|im_start|> at position 0 has norm %.0f, the token after it %.0f, "
             "median %.1f", LAYER, float(norms[:, 0].min()), float(norms[:, 1].max()), median)
    assert float(norms[:, 0].min()) > 100 * median and special[:, 0].all()
    assert float(norms[~special].max()) < OUTLIER_FACTOR * median  # nothing else is an outlier


def test_sink_without_bos_is_excluded_by_training_eval_and_index(real_models):
    lm, _ = real_models("smollm2")
    texts = [c.replace("<|im_start|>", "").replace("<|im_end|>", "") for c in CHATS]
    ids = _rows(lm, texts, prepend_bos=False)
    h = capture(lm, ids, None, "resid_post", LAYER)
    norms = h.norm(dim=-1)
    special = torch.isin(ids, torch.tensor(lm.tokenizer.all_special_ids))
    assert not special.any()
    median = float(norms.flatten().sort().values[(norms.numel() - 1) // 2])
    brute = norms <= OUTLIER_FACTOR * median
    log.info("SmolLM2 layer %d, rows without BOS: position 0 norm %.0f = %.0f× the median %.1f",
             LAYER, float(norms[:, 0].min()), float(norms[:, 0].min()) / median, median)
    assert not brute[:, 0].any() and brute[:, 1:].all()  # exactly the sink positions are outliers
    ref = reference_norm(lm, ids, h)
    assert ref == pytest.approx(median, rel=1e-6)
    assert torch.equal(keep_mask(lm, ids, h, OUTLIER_FACTOR, ref), brute)  # what the index applies
    # Training: the harvested block holds exactly the brute-force rows.
    src = LMSource(lm, ids, "resid_post", LAYER, block_tokens=ids.numel(), lm_batch_size=2,
                   outlier_factor=OUTLIER_FACTOR, norm_ref=ref)
    torch.testing.assert_close(src.rows(0, torch.arange(src.block_size(0))), h[brute].float())
    # Eval: the same positions are scored (reference from its first batch: these two rows).
    sae = make_sae(lm.d_model, d_sae=32, threshold=0.01, hook=hook_name("resid_post", LAYER))
    result = evaluate_sae(sae, lm, ids, batch_size=2, n_boot=0)
    assert result["tokens"] == int(brute.sum())
    assert result["outliers"]["excluded_positions"] == ids.shape[0]
