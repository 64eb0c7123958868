"""The environment of a job process: an allow-list of the server's variables, never its secrets.

The server's environment may hold JUMPSCOPE_ADMIN_TOKEN, session secrets or cloud credentials; a training job
needs none of them. It gets what Python, torch, CUDA and Hugging Face read (HF_TOKEN included: gated models),
locale, temp folders and proxies, plus the project on PYTHONPATH and a few defaults for log-friendly output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # so `-m app.cli` works from any cwd

ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TMP", "TEMP",
    "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "JUMPSCOPE_CACHE",
})
ALLOWED_PREFIXES = ("LC_", "PYTHON", "CUDA", "NVIDIA_", "NCCL_", "TORCH", "HF_", "HUGGINGFACE_", "TRANSFORMERS_",
                    "SAFETENSORS_", "XDG_", "KMP_", "MKL_", "TQDM_", "TRITON_")


def allowed(name: str) -> bool:
    """Whether a variable of the server's environment is passed to job processes."""
    return name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)


def child_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a job process: the allowed part of `base` (default os.environ), then `extra`.

    Unbuffered output (the log tail in the page should be live), the project on PYTHONPATH, and quiet
    tokenizers / throttled tqdm unless the server's environment says otherwise.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if allowed(k)}
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TQDM_MININTERVAL", "10")  # progress bars in a log file: a line every 10 s, not 10 a second
    env.update(extra or {})
    return env
