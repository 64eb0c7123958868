"""Train → eval → index → serve on the real models, checked through HTTP and headless Chromium (issue 11: 1, 6, 8).

Per model (SmolLM2-135M-Instruct, Gemma 3 270M): a small SAE trained by the CLI on Debian's fortunes and evaluated
by the CLI on held-out fortunes (eval.json: the held-out split, FVU = 1 − explained variance, finite), one latent
made dead (θ raised past any activation, its training density set to the file's floor), indexed by the CLI with
the default example windows; a copy without index.db is served beside it. The pages are then checked at 1280 px:
no horizontal overflow, a dead latent says "never active", an unindexed SAE says "not indexed", the ablation lists
are ranked by Δlog-prob, the chat template is offered only when the model has one (one BOS, never two), and an
empty completion says why.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from app.cli import main
from app.encoding import prompt_ids
from app.lm.chat import has_chat_template
from app.sae import load_sae, load_sparsity
from app.steering import clean_and_ablated_logits
from tests.real.conftest import MODELS, gguf_file
from tests.real.test_round_trip_real import fortunes_corpus  # noqa: F401  (a module fixture, used below)
from tests.web.browser_support import CHROMIUM, live_server

pytestmark = [pytest.mark.real, pytest.mark.browser, pytest.mark.timeout(1800),  # training + index in setup
              pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")]

WIDTH = 1280
TEXT = "The old man said that money cannot buy love, and then he laughed at the sea."
QUESTION = "What is the capital of France?"  # SmolLM2-Instruct answers a plain question with EOS at once
DEAD = 3


@pytest.fixture(scope="module", params=MODELS)
def served(request, real_models, fortunes_corpus, tmp_path_factory):  # noqa: F811
    """(base URL, LanguageModel, indexed SAE id, unindexed SAE id, Services) for one real model."""
    from app.web import Settings, create_app
    from app.web.services import Services

    lm, _ = real_models(request.param)
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    out = root / "sae"
    assert main(["train", "--model", str(gguf_file(request.param)), "--hook", "resid_post", "--layer",
                 str(lm.n_layers // 2), "--corpus", str(fortunes_corpus), "--d-sae", "128", "--tokens", "2048",
                 "--batch-size", "256", "--context-size", "64", "--buffer-tokens", "1024", "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["eval", "--sae", str(out), "--tokens", "512", "--batch-size", "8"]) == 0  # held out by default
    ev = json.loads((out / "eval.json").read_text())  # served beside the SAE (its metrics)
    assert ev["split"]["part"] == "held_out" and ev["split"]["disjoint_from_training"] is True
    assert math.isfinite(ev["fvu"]) and ev["fvu"] == pytest.approx(1 - ev["explained_variance"])
    sae, sparsity = load_sae(out), load_sparsity(out)
    with torch.no_grad():
        sae.threshold[DEAD] = 1e9  # no activation reaches it: a dead latent
    sparsity[DEAD] = -10.0  # what training records for a latent that never fired (log10 of the 1e-10 floor)
    sae.save(str(out), sparsity=sparsity)
    plain = root / "plain"
    shutil.copytree(out, plain)  # the same SAE, never indexed
    assert main(["index", "--sae", str(out), "--corpus", str(fortunes_corpus), "--tokens", "2048",
                 "--no-loss-effects"]) == 0
    services = Services(lm)
    sae_id, plain_id = services.register_sae(out), services.register_sae(plain)
    settings = Settings(data_dir=root / "data", max_new_tokens=8)
    with live_server(create_app(settings, services=services)) as base:
        yield base, lm, sae_id, plain_id, services


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": WIDTH, "height": 860})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.page_errors = errors
    yield pg
    ctx.close()


def no_overflow(page) -> None:
    """Nothing is wider than the 1280 px viewport: the document and every example row."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"the page is {width} px wide in a {WIDTH} px viewport"
    right = page.evaluate("Math.max(0, ...[...document.querySelectorAll('.example')]"
                          ".map(e => e.getBoundingClientRect().right))")
    assert right <= WIDTH
    assert page.page_errors == []


def api(page, path: str, body: dict | None = None) -> dict:
    r = page.request.post(path, data=body) if body is not None else page.request.get(path)
    assert r.ok, r.text()
    return r.json()


def top_latents(page, base: str, sae_id: str, n: int) -> list[int]:
    enc = api(page, base + "/api/encode", {"text": TEXT, "sae": sae_id})
    return [t["latent"] for t in enc["top_latents"][:n]]


def test_inspect_offers_the_chat_template_with_one_bos(page, served):
    base, lm, sae_id, *_ = served
    page.goto(f"{base}/?sae={sae_id}")
    assert (page.locator("input[name=chat]").count() == 1) == has_chat_template(lm)
    page.fill("textarea[name=text]", TEXT)
    page.click("#inspect-form button[type=submit]")
    page.wait_for_selector("#tokens .tok")
    no_overflow(page)
    if not has_chat_template(lm):
        return
    page.check("input[name=chat]")
    page.fill("textarea[name=text]", QUESTION)
    page.click("#inspect-form button[type=submit]")
    page.wait_for_url("**chat=1**")
    page.wait_for_selector("#tokens .tok")
    tokens = page.locator("#tokens .tok").all_inner_texts()
    want = lm.token_strs(prompt_ids(lm, lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True), 512))
    assert len(tokens) == len(want)
    bos = lm.tokenizer.bos_token
    assert tokens[0] == bos and tokens[1] != bos  # SmolLM2's BOS is <|im_start|>, which the template starts with
    no_overflow(page)


def test_dashboard_with_long_windows_fits_1280(page, served):
    base, _, sae_id, *_ = served
    latent = top_latents(page, base, sae_id, 1)[0]
    page.goto(f"{base}/latents/{sae_id}/{latent}")
    longest = page.evaluate("Math.max(0, ...[...document.querySelectorAll('#dashboard .example')]"
                            ".map(e => e.querySelectorAll('.tok').length))")
    assert longest >= 20  # the index's default window: 16 tokens before the centre, 8 after
    assert page.locator("#never-active").count() == 0
    no_overflow(page)


def test_dead_latent_says_never_active(page, served):
    base, _, sae_id, *_ = served
    page.goto(f"{base}/latents/{sae_id}/{DEAD}")
    assert "Never active" in page.inner_text("#never-active")
    assert page.locator("#intervals").count() == 0 and "0 – 0" not in page.inner_text("#dashboard")
    no_overflow(page)


def test_unindexed_sae_says_not_indexed(page, served):
    base, _, _, plain_id, _ = served
    page.goto(f"{base}/latents/{plain_id}/{DEAD}")
    assert page.inner_text("#density") == "not indexed"
    assert page.inner_text("#training-density") == "never active"
    assert "e-10" not in page.inner_text("#dashboard")
    page.goto(f"{base}/latents/{plain_id}/{DEAD + 1}")
    assert page.inner_text("#density") == "not indexed" and "e-10" not in page.inner_text("#dashboard")
    no_overflow(page)


def test_ablation_ranks_by_delta_logprob(page, served):
    base, lm, sae_id, *_ = served
    latents = top_latents(page, base, sae_id, 2)
    page.goto(f"{base}/ablate?sae={sae_id}&text={TEXT}&latent={latents[0]},{latents[1]}")
    page.wait_for_selector("#ablate-tokens .tok")
    no_overflow(page)
    res = api(page, base + "/api/ablate", {"text": TEXT, "sae": sae_id, "latents": latents, "top_n": 5})
    # Reference: the mean of log_softmax(ablated) − log_softmax(clean) over the positions after BOS.
    clean, ablated = clean_and_ablated_logits(lm, served[4].get(sae_id).sae, res["token_ids"], latents)
    dlogp = (torch.log_softmax(ablated.double(), -1) - torch.log_softmax(clean.double(), -1))[1:-1].mean(0)
    for key, ref in (("top_increased", dlogp.topk(5)), ("top_decreased", (-dlogp).topk(5))):
        assert [c["token_id"] for c in res[key]] == ref.indices.tolist()
        torch.testing.assert_close(torch.tensor([abs(c["delta"]) for c in res[key]], dtype=torch.float64),
                                   ref.values.abs(), atol=1e-4, rtol=1e-3)
    assert all(c["delta"] < 0 for c in res["top_decreased"])  # "less likely" lists only tokens that fell
    assert "More likely without the latents" in page.inner_text("#ablate-result")



def test_steer_explains_an_empty_completion_and_uses_the_chat_template(page, served):
    base, lm, sae_id, *_ = served
    page.goto(f"{base}/steer?sae={sae_id}&prompt={QUESTION}&temperature=0&max_new_tokens=8")
    page.wait_for_selector("#default-text", state="attached")
    no_overflow(page)
    text = page.inner_text("#default-text")
    note = page.locator("#default-note")
    assert (note.count() == 1) == (not text.strip())  # a note exactly when the completion shows nothing
    if not has_chat_template(lm):
        assert page.locator("input[name=chat]").count() == 0
        return
    assert text == "" and "end-of-sequence" in note.inner_text() and "chat template" in note.inner_text()
    page.check("input[name=chat]")
    page.click("#steer-form button[type=submit]")
    page.wait_for_selector("#chat-note")
    assert page.inner_text("#default-text").strip() and page.locator("#default-note").count() == 0
    res = api(page, base + "/api/steer", {"prompt": QUESTION, "sae": sae_id, "chat": True, "temperature": 0,
                                          "max_new_tokens": 4})
    bos = lm.tokenizer.bos_token
    assert res["prompt_tokens"][0] == bos and res["prompt_tokens"][1] != bos  # one BOS, never two
    assert res["default_note"] is None and res["default_stop"] in ("eos", "max_new_tokens")
