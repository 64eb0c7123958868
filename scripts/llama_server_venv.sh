#!/usr/bin/env bash
# Build (once) and install llama-cpp-python's OpenAI-compatible server into its own venv, for the real-endpoint
# tests of `jumpscope explain --explainer openai` (tests/explain/test_llm_real.py).
#
# llama-cpp-python ships only an sdist on PyPI: pip compiles llama.cpp from source (~30-60 min on 2 cores). The
# built wheel is cached in $JUMPSCOPE_CACHE/wheels (default ~/.cache/jumpscope/wheels) and reused; the server
# lives in $JUMPSCOPE_CACHE/llama-venv, apart from the project's .venv (its fastapi/starlette pins would clash).
# Idempotent: exits at once when the venv already imports llama_cpp.server.
#
#   bash scripts/llama_server_venv.sh            # build if needed, install, print the venv's python
#   LLAMA_CPP_VERSION=0.3.36 bash scripts/...     # another version
set -euo pipefail

VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
CACHE="${JUMPSCOPE_CACHE:-$HOME/.cache/jumpscope}"
WHEELS="$CACHE/wheels"
VENV="$CACHE/llama-venv"
PY="${PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server.app" >/dev/null 2>&1; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$WHEELS"
wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $VERSION from source (long; log: $WHEELS/build-$VERSION.log)" >&2
  # GGML_NATIVE=OFF: a portable build (no -march=native), so the cached wheel runs on any x86-64 CI machine.
  CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}" nice -n 10 "$PY" -m pip wheel --no-deps \
    "llama-cpp-python==$VERSION" -w "$WHEELS" >"$WHEELS/build-$VERSION.log" 2>&1
  wheel=$(ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl | head -n1)
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# The server extra (uvicorn, fastapi, sse-starlette, starlette-context, pydantic-settings) from PyPI; the binding
# itself from the cached wheel (--find-links makes pip take it instead of rebuilding the sdist).
"$VENV/bin/python" -m pip install -q --find-links "$WHEELS" "$wheel" "llama-cpp-python[server]==$VERSION" >&2
"$VENV/bin/python" -c "import llama_cpp.server.app" >&2
echo "$VENV/bin/python"
