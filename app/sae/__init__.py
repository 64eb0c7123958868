"""The JumpReLU SAE and its file formats. Never imports transformers or web packages."""

from app.sae.errors import UnknownLatent
from app.sae.formats import SAEFormatError, load_sae, load_sparsity, save_native, update_metadata
from app.sae.jumprelu import JumpReLUSAE, SAEConfig, SAEOutput, jumprelu, step

__all__ = [
    "JumpReLUSAE",
    "SAEConfig",
    "SAEOutput",
    "SAEFormatError",
    "UnknownLatent",
    "jumprelu",
    "load_sae",
    "load_sparsity",
    "save_native",
    "step",
    "update_metadata",
]
