"""Chat prompts get one BOS, never two; an empty completion says why (issue 11, point 6).

The tiny tokenizer gets a ChatML-like template that starts with its BOS, as SmolLM2's (`<|im_start|>` is its BOS)
and Gemma's (`{{ bos_token }}`) do; the references are the tokenizer's own output, written out here.
"""

from __future__ import annotations

import pytest

from app.encoding import prompt_ids
from app.lm.chat import chat_prompt, completion_note, has_chat_template
from app.steering import steer

TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}[assistant] {% endif %}")


@pytest.fixture
def chat_lm(tiny_lm, monkeypatch):
    """The tiny LM with a chat template for the duration of one test."""
    monkeypatch.setattr(tiny_lm.tokenizer, "chat_template", TEMPLATE, raising=False)
    return tiny_lm


@pytest.fixture
def forced(tiny_lm):
    """Force the next token to be `token_id` at every step (a hook on the LM head); yields a setter."""
    state: dict[str, int | None] = {"id": None}

    def hook(module, args, out):
        if state["id"] is None:
            return out
        out = out.clone()
        out[..., state["id"]] = out.abs().max() * 10 + 100
        return out

    handle = tiny_lm.model.get_output_embeddings().register_forward_hook(hook)
    yield lambda token_id: state.update(id=token_id)
    handle.remove()


def test_no_template_no_offer(tiny_lm):
    assert not has_chat_template(tiny_lm)
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tiny_lm, "hello")


def test_chat_prompt_has_one_bos(chat_lm):
    tok = chat_lm.tokenizer
    text = chat_prompt(chat_lm, "Is it raining in Paris?")
    assert text == f"{tok.bos_token}[user] Is it raining in Paris?{tok.eos_token}[assistant] "
    ids = prompt_ids(chat_lm, text, 512)
    body = tok(text[len(tok.bos_token):], add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id, *body]  # the template's BOS, and no second one
    assert ids.count(tok.bos_token_id) == 1


def test_plain_prompt_still_gets_its_bos(tiny_lm):
    tok = tiny_lm.tokenizer
    plain = prompt_ids(tiny_lm, "The red fox", 512)
    assert plain == [tok.bos_token_id, *tok("The red fox", add_special_tokens=False)["input_ids"]]
    assert prompt_ids(tiny_lm, tok.bos_token + "The red fox", 512) == plain  # typed BOS: not doubled


def test_steer_with_chat_formats_the_prompt(chat_lm, tiny_sae):
    r = steer(chat_lm, tiny_sae, "Hello there", [], max_new_tokens=3, temperature=0.0, chat=True)
    assert r.chat and r.model_prompt == chat_prompt(chat_lm, "Hello there") and r.prompt == "Hello there"
    assert r.prompt_tokens == chat_lm.token_strs(prompt_ids(chat_lm, r.model_prompt, 512))
    assert r.prompt_tokens.count(chat_lm.tokenizer.bos_token) == 1


def test_eos_first_is_explained(chat_lm, tiny_sae, forced):
    forced(chat_lm.tokenizer.eos_token_id)
    r = steer(chat_lm, tiny_sae, "The red fox", [], max_new_tokens=5, temperature=0.0)
    assert r.default == r.steered == "" and r.default_stop == r.steered_stop == "eos"
    assert "first token was its end-of-sequence token" in r.default_note
    assert "chat template" in r.default_note  # the model has one and the prompt was plain
    r = steer(chat_lm, tiny_sae, "The red fox", [], max_new_tokens=5, temperature=0.0, chat=True)
    assert "end-of-sequence" in r.default_note and "chat template" not in r.default_note


def test_special_tokens_only_is_explained(tiny_lm, tiny_sae, forced):
    forced(tiny_lm.tokenizer.pad_token_id)
    r = steer(tiny_lm, tiny_sae, "The red fox", [], max_new_tokens=4, temperature=0.0)
    assert r.default == "" and r.default_stop == "max_new_tokens" and len(r.default_tokens) == 4
    assert "only special or whitespace tokens" in r.default_note and "chat template" not in r.default_note


def test_a_completion_with_text_has_no_note(tiny_lm, tiny_sae, forced):
    word = tiny_lm.tokenizer("fox", add_special_tokens=False)["input_ids"][0]
    forced(word)
    r = steer(tiny_lm, tiny_sae, "The red fox", [], max_new_tokens=3, temperature=0.0)
    assert r.default.strip() and r.default_note is None and r.steered_note is None
    assert completion_note(tiny_lm, [], True, False) is not None  # the same function, on an empty completion

