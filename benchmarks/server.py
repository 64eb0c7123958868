"""What the serving benchmarks share: a model + SAE to serve (the demo bundle, or a tiny random fixture) and
`jumpscope serve` started as a subprocess on 127.0.0.1 with a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the red fox jumps over a lazy dog while seven wizards quietly judge boxing matches near the old river "
         "bank and children sing about apples bread and warm morning light in paris today").split()


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_fixture(root: Path, n_layers: int = 3, d_sae: int = 512, context_size: int = 128) -> tuple[str, str]:
    """A tiny random Llama (d_model 64) and a random JumpReLU SAE on its layer-1 residual stream (seconds)."""
    from app.lm.tiny import save_tiny_model, train_tokenizer
    from app.sae import JumpReLUSAE

    tok = train_tokenizer([" ".join(WORDS)] * 50, vocab_size=400)
    model = save_tiny_model(root / "model", "llama", tok, d_model=64, n_layers=n_layers, max_positions=512)
    sae = JumpReLUSAE.create(64, d_sae, threshold=0.05, seed=0,
                             metadata={"model_name": str(model), "hook_name": "blocks.1.hook_resid_post",
                                       "context_size": context_size})
    sae.save(root / "sae")
    return str(model), str(root / "sae")


def demo_fixture() -> tuple[str, str] | None:
    """(model dir, SAE dir) of the demo bundle, built on first use; None when it cannot be had."""
    try:
        from app.demo.bundle import ensure_demo

        bundle = ensure_demo()
    except Exception as e:  # no demo in this build, or its build failed: callers fall back to the tiny fixture
        print(f"demo bundle unavailable ({type(e).__name__}: {e}); using a tiny model", file=sys.stderr)
        return None
    return str(bundle.model_dir), str(bundle.sae_dir)


def start_server(model: str, sae: str, data_dir: Path, env: dict[str, str] | None = None,
                 timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """`jumpscope serve` on 127.0.0.1 and a free port; returns (process, base URL) once /api/health answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--model", model, "--sae", sae,
                               "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
                               "--data-dir", str(data_dir)],
                              cwd=REPO, env={**os.environ, **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            err = server.stderr.read().decode(errors="replace")[-2000:] if server.poll() is not None else ""
            server.kill()
            raise SystemExit(f"the server did not start\n{err}")
        time.sleep(0.25)
