"""Start and stop llama-cpp-python's OpenAI-compatible server on a free loopback port (tests and benchmarks).

The server lives in its own venv (scripts/llama_server_venv.sh builds it: $JUMPSCOPE_CACHE/llama-venv), run as a
subprocess: `python -m llama_cpp.server --model FILE.gguf --host 127.0.0.1 --port P`. `server_python()` is None
when that venv is absent, so callers can skip with a reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def server_python() -> Path | None:
    """The python of the llama-server venv, or None when scripts/llama_server_venv.sh has not been run."""
    cache = Path(os.environ.get("JUMPSCOPE_CACHE", Path.home() / ".cache" / "jumpscope"))
    py = cache / "llama-venv" / "bin" / "python"
    if not py.is_file():
        return None
    ok = subprocess.run([str(py), "-c", "import llama_cpp.server.app"], capture_output=True, timeout=120)
    return py if ok.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(model: Path, n_ctx: int = 4096, threads: int = 2, timeout: float = 180.0,
                 log_file: Path | None = None) -> Iterator[str]:
    """Run the server for `model` (a .gguf file); yields its base URL ('http://127.0.0.1:P/v1'); stops it after."""
    py = server_python()
    if py is None:
        raise RuntimeError("llama-cpp-python's server is not installed: run scripts/llama_server_venv.sh")
    port = free_port()
    out = open(log_file, "wb") if log_file else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    cmd = [str(py), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--model_alias", model.stem]
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama server exited with code {proc.returncode} before answering "
                                   f"(command: {' '.join(cmd)})")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        log.info("llama server for %s on %s (pid %d)", model.name, url, proc.pid)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_file:
            out.close()
