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
