"""SAE training: config, activation sources, mixing buffer, trainer, checkpoints, metrics.

`from app.training import TrainConfig, train` — imported lazily so `app.training.metrics` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from app.training.config import TrainConfig

        return TrainConfig
    if name == "train":
        from app.training.trainer import train

        return train
    raise AttributeError(name)
