"""`--explainer hf`: an LLM explainer (and detection/fuzzing scorers) on a local Hugging Face instruct model.

`app.explain.runner` imports this module when asked for the explainer 'hf'; it registers the factory.
Options: model (a folder, hub id or `.gguf` file, loaded through app.lm), device, dtype, batch_size.
"""

from __future__ import annotations

from typing import Any

from app.explain.examples import ExampleSource
from app.explain.hf_chat import HFChat
from app.explain.llm import LLMExplainer, with_scorers
from app.explain.runner import register_explainer


def make(source: ExampleSource, model: str | None = None, device: str | None = None, dtype: str | None = None,
         batch_size: int | None = None, **_: Any) -> LLMExplainer:
    """The explainer for `--explainer hf` (ValueError when no model is given or it has no chat template)."""
    if not model:
        raise ValueError("--explainer hf needs --explainer-model PATH (an instruct model folder, hub id or .gguf)")
    chat = HFChat.load(model, device=device, dtype=dtype, batch_size=batch_size or 8)
    return with_scorers(LLMExplainer(chat))


register_explainer("hf", make)
