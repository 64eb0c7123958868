"""The one error type of app.sae's readers."""

from __future__ import annotations


class SAEFormatError(ValueError):
    """An SAE file or folder that cannot be read; the message says what is wrong and where."""
