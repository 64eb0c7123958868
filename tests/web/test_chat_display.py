"""Issue 11 in the web layer on the tiny model: the chat template offered (API and pages), an empty completion
explained, a dead latent and an unindexed density shown as words (the browser checks on real models are in
tests/real/test_serve_real.py)."""

from __future__ import annotations

import html

import pytest
import torch

HX = {"HX-Request": "true"}
TEMPLATE = "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}{% endfor %}<assistant> "


@pytest.fixture
def chat_model(services, monkeypatch):
    monkeypatch.setattr(services.lm.tokenizer, "chat_template", TEMPLATE, raising=False)
    return services.lm


def test_no_chat_template_no_offer(client):
    assert 'name="chat"' not in client.get("/steer").text and 'name="chat"' not in client.get("/").text
    r = client.post("/api/steer", json={"prompt": "The red fox", "chat": True, "max_new_tokens": 2})
    assert r.status_code == 400 and "no chat template" in r.json()["detail"]  # a ValueError: bad input


def test_chat_template_offered_and_used(client, chat_model):
    assert 'name="chat"' in client.get("/steer").text and 'name="chat"' in client.get("/").text
    bos = chat_model.tokenizer.bos_token
    a = client.post("/api/steer", json={"prompt": "The red fox", "chat": True, "max_new_tokens": 2,
                                        "temperature": 0}).json()
    assert a["chat"] is True and a["model_prompt"] == f"{bos}<user> The red fox<assistant> "
    assert a["prompt_tokens"].count(bos) == 1 and a["prompt_tokens"][0] == bos
    enc = client.post("/api/encode", json={"text": "The red fox", "chat": True}).json()
    assert enc["tokens"] == a["prompt_tokens"]
    page = client.get("/steer", params={"prompt": "The red fox", "chat": "1", "max_new_tokens": "2"}, headers=HX)
    assert 'id="chat-note"' in page.text and "chat=1" in page.headers["HX-Push-Url"]
    inspect = client.get("/", params={"text": "The red fox", "chat": "1"}, headers=HX)
    assert inspect.text.count(f">{html.escape(bos)}</button>") == 1  # one BOS token button


def test_empty_completion_is_explained(client, services):
    eos = services.lm.tokenizer.eos_token_id
    head = services.lm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, a, out: out.index_fill(-1, torch.tensor([eos]), 1e4))
    try:
        r = client.post("/api/steer", json={"prompt": "The red fox", "max_new_tokens": 3, "temperature": 0})
        page = client.get("/steer", params={"prompt": "The red fox", "max_new_tokens": "3"}, headers=HX)
    finally:
        handle.remove()
    a = r.json()
    assert a["default"] == "" and a["default_stop"] == "eos" and "end-of-sequence" in a["default_note"]
    assert 'id="default-note"' in page.text and "end-of-sequence" in page.text


def test_unindexed_density_is_words(client):
    r = client.get("/latents/plain-sae/3", headers=HX)  # no index, no sparsity file
    assert r.status_code == 200 and 'id="density">not indexed<' in r.text and "e-10" not in r.text


def test_training_floor_density_is_never_active(services):
    from app.encoding import latent_weights_summary

    sae = services.get("plain-sae").sae
    dens = torch.full((sae.d_sae,), -10.0)
    dens[1] = -2.0
    dead = latent_weights_summary(services.lm, sae, 0, dens)
    alive = latent_weights_summary(services.lm, sae, 1, dens)
    assert dead["density"] == 0.0 and dead["density_source"] == "training"
    assert alive["density"] == pytest.approx(0.01)
