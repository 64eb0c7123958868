"""Automatic latent explanations (issue 17): explainers, scorers, their storage in index.db, and the run.

Modules: `store` (tables, put/get/list), `base` (LatentExamples, the Explainer / Scorer protocols),
`examples` (reads LatentExamples from an index), `builtin` (the LLM-free explainer and its score),
`runner` (explain + score a set of latents, resumable).
"""
