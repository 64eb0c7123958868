"""Steering fixtures: a random JumpReLU SAE on the tiny Llama's layer-1 residual stream."""

from __future__ import annotations

import pytest

from app.sae import JumpReLUSAE
from tests.steering.helpers import make_sae


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm) -> JumpReLUSAE:
    return make_sae(tiny_lm.d_model)
