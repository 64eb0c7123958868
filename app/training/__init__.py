"""SAE training: config, activation sources, mixing buffer, trainer, checkpoints, metrics."""
