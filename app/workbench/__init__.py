"""The JumpReLU threshold workbench: what-if θ edits of one latent, the sparsity dial over all thresholds, and
SAE comparison data, on a cached held-out sample (below app/web: no web imports)."""
