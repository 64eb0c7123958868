"""What unauthenticated answers may say about files: names, never absolute paths.

`/api/health`, `/api/saes` and every page header name the model and SAEs; the server's folder layout is nobody's
business, so local paths are cut to their last component (a hub id such as "google/gemma-2-2b" is kept as given)
and paths inside error messages are cut the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

# An absolute POSIX or Windows path inside a message (up to whitespace, a quote, a comma or a colon+space).
_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|/)[^\s'\",;]*?(?=$|[\s'\",;]|:\s|:$)")


def model_label(name: str | None) -> str | None:
    """The model as shown to anyone: a local folder's name, or the hub id the operator gave."""
    if not name:
        return name
    path = Path(name)
    if name.startswith(("/", "~", ".", "\\")) or path.is_absolute() or path.exists():
        return path.name or name
    return name


def scrub_paths(message: str, known: dict[str, str] | None = None) -> str:
    """The message with absolute paths cut to their last component (`known`: exact replacements first)."""
    for long, short in sorted((known or {}).items(), key=lambda kv: -len(kv[0])):
        if long:
            message = message.replace(long, short)
    return _ABS_PATH.sub(lambda m: Path(m.group(0).rstrip("/\\")).name or m.group(0), message)


def failed_saes(failed: dict[str, str]) -> dict[str, str]:
    """SAE path → reason, as SAE folder name → reason without paths (names made unique)."""
    out: dict[str, str] = {}
    for raw, reason in failed.items():
        path = Path(raw)
        name = path.name or raw
        label, n = name, 2
        while label in out:
            label, n = f"{name} ({n})", n + 1
        known = {str(path): name, raw: name}
        try:
            known[str(path.resolve())] = name
        except (OSError, RuntimeError):
            pass
        out[label] = scrub_paths(str(reason), known)
    return out
