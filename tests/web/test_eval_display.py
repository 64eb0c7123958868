"""Evaluation numbers on /compare carry their 95 % intervals, and dead latents the token count behind them."""

from __future__ import annotations


def test_compare_shows_intervals_and_dead_token_count(client, services, monkeypatch):
    metrics = {"l0": 7.5, "fvu": 0.25, "fvu_ci": [0.2, 0.3], "delta_lm_loss": 0.5,
               "delta_lm_loss_ci": [0.375, 0.625], "dead_fraction": 0.125, "dead_over_tokens": 12345,
               "tokens": 12345, "bootstrap": {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "context"}}
    monkeypatch.setattr(services.get("tiny-sae"), "metrics", metrics)
    r = client.get("/compare")
    assert r.status_code == 200
    row = r.text[r.text.index('<tr data-sae="tiny-sae">'):]
    row = row[: row.index("</tr>")]
    assert "[0.2, 0.3]" in row and "[0.375, 0.625]" in row
    assert "over 12345 tokens" in row
    api = client.get("/api/saes/tiny-sae/metrics").json()
    assert api["fvu_ci"] == [0.2, 0.3] and api["dead_over_tokens"] == 12345


def test_report_rows_carry_the_eval_intervals():
    from app.web.report import summary_rows

    report = {"l0": 5.3, "fvu": 0.2, "delta_lm_loss": 0.006, "delta_lm_loss_ci": [0.004, 0.008]}
    metrics = {"l0": 5.3, "fvu": 0.2, "fvu_ci": [0.18, 0.22], "l0_ci": [5.0, 5.6]}
    rows = {r["label"]: r for r in summary_rows(report, metrics)}
    assert rows["SAE FVU"]["ci"] == [0.18, 0.22]  # from the SAE's eval.json: the same value
    assert rows["SAE ΔLM loss (nats)"]["ci"] == [0.004, 0.008]  # the report's own
    assert rows["SAE L0"]["ci"] == [5.0, 5.6]
    other = {"l0": 9.9, "fvu": 0.5, "fvu_ci": [0.4, 0.6]}  # another evaluation: its interval is not borrowed
    rows = {r["label"]: r for r in summary_rows(report, other)}
    assert rows["SAE FVU"]["ci"] is None and rows["SAE L0"]["ci"] is None
    assert all(r.get("ci") is None for r in summary_rows({"fvu": 0.2}))


def test_report_page_shows_the_interval(settings, services, tmp_path):
    from tests.web.test_report import fake_report, make_client, summary_row, write

    entry = services.get("tiny-sae")
    path = tmp_path / "bundle" / "report.json"
    write(path, fake_report(entry.sae.d_sae, entry.hook, fvu_ci=[0.15, 0.25]))
    with make_client(settings, services, path) as c:
        page = c.get("/report")
    assert page.status_code == 200
    assert '<span class="ci">[0.15, 0.25]</span>' in summary_row(page.text, "SAE FVU")
