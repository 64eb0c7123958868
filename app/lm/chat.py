"""Chat models in the steer and inspect views: the model's own chat template, and why a completion came back empty.

A chat-formatted prompt usually starts with the tokenizer's BOS already (`<|im_start|>` for SmolLM2, `<bos>` for
Gemma); `prompt_ids` then adds no second one. An instruct model given a plain prompt often ends at once (its first
token is EOS); the completion notes say so instead of showing nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.lm.model import LanguageModel


def has_chat_template(lm: LanguageModel) -> bool:
    """Whether the model's tokenizer carries a chat template (instruct models do; base models usually not)."""
    return bool(getattr(lm.tokenizer, "chat_template", None))


def chat_prompt(lm: LanguageModel, text: str) -> str:
    """`text` as one user turn in the model's chat template, ending where the assistant's reply starts.

    ValueError when the model has no chat template (the web layer answers 422 with this message).
    """
    if not has_chat_template(lm):
        raise ValueError("this model has no chat template; untick 'chat template' and send the plain prompt")
    return str(lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True))


def completion_note(lm: LanguageModel, new_ids: Sequence[int], stopped_at_eos: bool, chat: bool) -> str | None:
    """Why a completion shows no text (None when it shows some).

    Empty because EOS came first, or because only special / whitespace tokens were generated; for a model with
    a chat template given a plain prompt, the note suggests the template.
    """
    if lm.tokenizer.decode(list(new_ids), skip_special_tokens=True).strip():
        return None
    hint = (" An instruct model often ends a plain prompt at once: try its chat template."
            if has_chat_template(lm) and not chat else "")
    if not new_ids:
        eos = lm.tokenizer.eos_token or "EOS"
        if stopped_at_eos:
            return f"Empty: the model's first token was its end-of-sequence token {eos}, so it stopped at once.{hint}"
        return f"Empty: no token was generated.{hint}"
    shown = " ".join(repr(t) for t in lm.token_strs(list(new_ids))[:8])
    end = " and then end-of-sequence" if stopped_at_eos else ""
    return f"Nothing to show: the model generated only special or whitespace tokens ({shown}){end}.{hint}"
