"""One naming rule for partials: every template under templates/partials/ starts with "_"."""

from __future__ import annotations

from app.web.assets import templates_dir


def test_every_partial_is_named_with_a_leading_underscore():
    names = [p.name for p in (templates_dir() / "partials").glob("*.html")]
    assert names and [n for n in names if not n.startswith("_")] == []
