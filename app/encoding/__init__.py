"""A text's active latents per token, and what an SAE's weights alone say about one latent. No web imports here."""

from app.encoding.encode import InputTooLong, encode_many, encode_text, prompt_ids
from app.encoding.weights_summary import LOG10_DENSITY_FLOOR, latent_weights_summary

__all__ = [
    "LOG10_DENSITY_FLOOR",
    "InputTooLong",
    "encode_many",
    "encode_text",
    "latent_weights_summary",
    "prompt_ids",
]
