"""The pages' CSP (style-src 'self', script-src 'self') blocks inline styles and inline scripts: a template that
uses one breaks in the browser (and only the browser tests would see it). This fast check reads every template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "templates").rglob("*.html"))
INLINE = {
    "style attribute": re.compile(r"\sstyle\s*="),
    "event-handler attribute": re.compile(r"\son[a-z]+\s*=\s*[\"']"),
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>"),
}


def test_templates_exist():
    assert len(TEMPLATES) > 10


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_no_inline_styles_or_scripts(path):
    text = path.read_text()
    found = [what for what, pattern in INLINE.items() if pattern.search(text)]
    assert not found, f"{path.name} has an inline {', '.join(found)}, which the CSP blocks; use static/*.css or *.js"
