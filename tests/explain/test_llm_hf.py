"""The local-model chat path (`HFChat`) on the tiny random LM: the chat template is applied, batched (left-padded)
greedy answers equal one-at-a-time ones, and a model without a chat template is refused."""

from __future__ import annotations

import pytest

from app.explain.hf_chat import HFChat

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture
def chat_lm(tiny_lm, monkeypatch):
    monkeypatch.setattr(tiny_lm.tokenizer, "chat_template", TEMPLATE, raising=False)
    return tiny_lm


def test_batched_answers_equal_single_answers(chat_lm):
    convs = [[{"role": "system", "content": "explain"}, {"role": "user", "content": text}]
             for text in ("the red fox", "Alice said: I like green apples and warm bread today", "3 + 4 = 7")]
    batched = HFChat(chat_lm, batch_size=3).complete_many(convs, max_tokens=6)
    single = [HFChat(chat_lm, batch_size=1).complete(c, max_tokens=6) for c in convs]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_prompt_uses_the_chat_template(chat_lm):
    chat = HFChat(chat_lm)
    ids = chat._prompt_ids([{"role": "user", "content": "the red fox"}])
    text = chat_lm.tokenizer.decode(ids)
    assert text.replace(" ", "").startswith("<user>theredfox") and text.replace(" ", "").endswith("<assistant>")
    assert chat.name.startswith("hf:")


def test_model_without_chat_template_is_refused(tiny_lm):
    with pytest.raises(ValueError, match="no chat template"):
        HFChat(tiny_lm)
