"""The demo validation report page (/report) and its JSON (/api/report): links, targets, escaping, bad files."""

from __future__ import annotations

import json
import re

import pytest

XSS = "<script>alert('x')</script>"


def fake_report(d_sae: int = 64, hook: str = "blocks.0.hook_resid_post", **extra) -> dict:
    """A small report.json in the shape app.demo.report.build_report writes."""
    concepts = {
        "quotation": {"latent": 3, "f1": 0.25, "precision": 0.31, "recall": 0.21, "support": 37, "kind": "structural"},
        "colour": {"latent": 5, "f1": 1.0, "precision": 1.0, "recall": 1.0, "support": 12, "kind": "lexical"},
        "animal": {"latent": 17, "f1": 0.9, "precision": 0.85, "recall": 0.95, "support": 11, "kind": "lexical"},
        "question": {"latent": 50, "f1": 0.5, "precision": 0.5, "recall": 0.5, "support": 9, "kind": "structural"},
    }
    report = {
        "concepts": concepts, "mean_lexical_f1": 0.95, "mean_structural_f1": 0.375, "l0": 5.3, "fvu": 0.2,
        "delta_lm_loss": 0.006, "ce_score": 0.99, "lm_val_loss": 1.95, "unigram_loss": 5.21,
        "steering_ratio": 2.5,
        "steering": {"latent": 5, "value": 1.57, "ratio": 2.5, "default_colour_share": 0.027,
                     "steered_colour_share": 0.578, "default_tokens": 10, "steered_tokens": 18,
                     "examples": [{"prompt": "Anna", "default": " gave a groan.", "steered": " purple purple"}]},
        "labelled_tokens": 300, "sae": {"d_sae": d_sae, "hook_name": hook},
        "targets": {"mean_lexical_f1": {"op": ">=", "target": 0.8, "met": True}},
    }
    report.update(extra)
    return report


def write(path, report) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


@pytest.fixture
def tiny_entry(services):
    return services.get("tiny-sae")


def make_client(settings, services, report_path):
    from fastapi.testclient import TestClient

    from app.web import create_app

    app = create_app(settings.model_copy(update={"demo_report": report_path}), services=services)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def report_path(tmp_path, tiny_entry):
    path = tmp_path / "bundle" / "report.json"
    write(path, fake_report(tiny_entry.sae.d_sae, tiny_entry.hook))
    return path


def summary_row(html: str, label: str) -> str:
    """The <tr> of one headline figure."""
    m = re.search(r"<tr><td>" + re.escape(label) + r"</td>.*?</tr>", html, re.S)
    assert m, label
    return m.group(0)


def test_api_report_is_the_file(settings, services, report_path):
    with make_client(settings, services, report_path) as c:
        r = c.get("/api/report")
    assert r.status_code == 200 and r.json() == json.loads(report_path.read_text())


def test_report_page_links_concepts_and_marks_targets(settings, services, report_path, tiny_entry):
    with make_client(settings, services, report_path) as c:
        page = c.get("/report")
        home = c.get("/")
    assert page.status_code == 200 and "<html" in page.text
    report = json.loads(report_path.read_text())
    for name, concept in report["concepts"].items():
        assert f"<td>{name}</td>" in page.text
        assert f'<a href="/latents/{tiny_entry.id}/{concept["latent"]}">#{concept["latent"]}</a>' in page.text
    # lexical concepts come first, each kind in report order
    order = [page.text.index(f"<td>{n}</td>") for n in ("colour", "animal", "quotation", "question")]
    assert order == sorted(order)
    assert "report-pass" in summary_row(page.text, "Mean lexical F1")
    assert "report-fail" in summary_row(page.text, "SAE FVU")  # 0.2 > 0.1
    assert "report-pass" in summary_row(page.text, "SAE L0")
    assert "report-fail" in summary_row(page.text, "Steering ratio")  # 2.5 < 3
    assert "report-pass" in summary_row(page.text, "LM validation loss (nats)") and "5.21" in page.text
    assert "report-" not in summary_row(page.text, "SAE ΔLM loss (nats)")  # no target
    assert '<a href="/report" aria-current="page">Report</a>' in page.text
    assert '<a href="/report" >Report</a>' in home.text
    # the linked dashboard exists
    with make_client(settings, services, report_path) as c:
        assert c.get(f"/latents/{tiny_entry.id}/17").status_code == 200


def test_report_finds_the_bundle_sae_folder(settings, services, tmp_path, tiny_entry, plain_sae_folder):
    """The SAE folder beside report.json (the bundle layout) decides the link, whatever the `sae` block says."""
    from app.demo.layout import SAE_DIR
    from app.web.report import BUNDLE_SAE_DIR

    assert BUNDLE_SAE_DIR == SAE_DIR
    path = tmp_path / "bundle2" / "report.json"
    write(path, fake_report(d_sae=999))
    (path.parent / SAE_DIR).symlink_to(plain_sae_folder)
    with make_client(settings, services, path) as c:
        page = c.get("/report")
    assert page.status_code == 200 and '<a href="/latents/plain-sae/5">#5</a>' in page.text
    assert '<a href="/latents/plain-sae/50">' not in page.text and "#50" in page.text  # plain-sae has 48 latents
    assert "/latents/plain-sae/17" in page.text and "/latents/tiny-sae/" not in page.text


def test_unknown_sae_shows_latents_without_links(settings, services, tmp_path):
    path = tmp_path / "r" / "report.json"
    write(path, fake_report(d_sae=12345))
    with make_client(settings, services, path) as c:
        page = c.get("/report")
    assert page.status_code == 200 and "#17" in page.text and "/latents/tiny-sae/17" not in page.text


def test_no_report_configured(client):
    r = client.get("/api/report")
    assert r.status_code == 404 and "no demo report is configured" in r.json()["detail"]
    page = client.get("/report")
    assert page.status_code == 404 and "<html" in page.text and "no demo report is configured" in page.text
    assert 'href="/report"' not in client.get("/").text


def test_missing_report_file(settings, services, tmp_path):
    with make_client(settings, services, tmp_path / "absent.json") as c:
        r = c.get("/api/report")
        page = c.get("/report")
    assert r.status_code == 404 and "jumpscope demo build" in r.json()["detail"]
    assert page.status_code == 404 and "jumpscope demo build" in page.text


def test_concept_names_are_escaped(settings, services, tmp_path, tiny_entry):
    report = fake_report(tiny_entry.sae.d_sae, tiny_entry.hook)
    report["concepts"][XSS] = {"latent": 2, "f1": 0.5, "precision": 0.5, "recall": 0.5, "kind": "lexical"}
    report["steering"]["examples"][0]["steered"] = XSS
    path = tmp_path / "x" / "report.json"
    write(path, report)
    with make_client(settings, services, path) as c:
        page = c.get("/report")
    assert page.status_code == 200 and XSS not in page.text and "&lt;script&gt;" in page.text


@pytest.mark.parametrize("content", [
    "{not json", "[1, 2]", '{"mean_lexical_f1": 0.9}', b"\xff\xfe\x00junk", "[" * 100_000,
])
def test_corrupt_report_is_a_clear_404(settings, services, tmp_path, content):
    path = tmp_path / "report.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with make_client(settings, services, path) as c:
        r = c.get("/api/report")
        page = c.get("/report")
    assert r.status_code == 404 and "demo build" in r.json()["detail"]
    assert page.status_code == 404 and "demo build" in page.text


def test_odd_values_render_instead_of_failing(settings, services, tmp_path):
    """Wrong types and NaN in an otherwise valid report show as '—' (the API answers null for NaN)."""
    path = tmp_path / "report.json"
    path.write_text('{"concepts": {"colour": {"latent": "five", "f1": NaN, "precision": null}, "odd": 3},'
                    ' "l0": "lots", "fvu": Infinity, "steering": {"examples": [1, {"prompt": 2}]}}')
    with make_client(settings, services, path) as c:
        r = c.get("/api/report")
        page = c.get("/report")
    assert r.status_code == 200 and r.json()["fvu"] is None and r.json()["concepts"]["colour"]["f1"] is None
    assert page.status_code == 200 and "<td>colour</td>" in page.text and "<td>odd</td>" in page.text


def test_serve_demo_sets_the_report(monkeypatch, tmp_path):
    """`jumpscope serve` with nothing named serves the demo bundle and its report."""
    import argparse
    import sys
    import types

    from app.cli.serve import build_settings, register

    bundle = types.SimpleNamespace(root=tmp_path, model_dir=tmp_path / "model", sae_dir=tmp_path / "sae",
                                   report_path=tmp_path / "report.json")
    (tmp_path / "sae").mkdir()
    fake = types.ModuleType("app.demo.bundle")
    fake.ensure_demo = lambda cache_dir=None, progress=None: bundle
    monkeypatch.setitem(sys.modules, "app.demo.bundle", fake)
    for var in ("JUMPSCOPE_MODEL", "JUMPSCOPE_SAES", "JUMPSCOPE_DEMO_REPORT"):
        monkeypatch.delenv(var, raising=False)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    s = build_settings(parser.parse_args(["serve"]))
    assert s.demo_report == tmp_path / "report.json"
    named = build_settings(parser.parse_args(["serve", "--model", "m", "--sae", str(tmp_path / "sae")]))
    assert named.demo_report is None
