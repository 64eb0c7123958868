"""The error types of app.sae: a file that cannot be read, a latent index the SAE does not have."""

from __future__ import annotations


class SAEFormatError(ValueError):
    """An SAE file or folder that cannot be read; the message says what is wrong and where."""


def brief(error: BaseException, limit: int = 200) -> str:
    """A library error's text, cut to `limit` characters: some (zipfile's header mismatch) quote raw bytes."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class UnknownLatent(KeyError):
    """A latent index outside 0..d_sae-1 (the web layer answers 404)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want the plain sentence
        return str(self.args[0]) if self.args else "unknown latent"
