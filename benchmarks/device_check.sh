#!/bin/bash
# One prepared GPU check for a machine that has torch + transformers but no web packages (docs/benchmarks.md,
# "On a GPU"): the core imports without FastAPI, the CUDA tests, the training step's throughput, and planted
# dictionaries trained on CUDA (JumpScope alone). Results go to $OUT (default ./device-out).
#   bash benchmarks/device_check.sh [SYNTH_SECONDS]
# pytest is not in such images: carry pure-Python copies (pytest, pluggy, iniconfig, pytest-timeout) in a folder
# and name it in PYTHONPATH; the tests run with --noconftest (tests/conftest.py needs hypothesis).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}; mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
P=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $P -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)"
  $P -c "import sys, app.training.trainer, app.sae, app.lm, app.steering; print('fastapi imported:', 'fastapi' in sys.modules)"
} 2>&1 | tee "$OUT/env.txt"
timeout 120 $P -m pytest -p no:cacheprovider --noconftest -m gpu tests/sae/test_sparse.py tests/sae/test_jumprelu.py -q -rs 2>&1 | tail -8 | tee "$OUT/pytest.txt"
for bf16 in --bf16 ""; do
  timeout 60 $P -m benchmarks.train_throughput --d-in 2304 --steps 20 --device cuda $bf16 2>&1 | tail -1
done | tee "$OUT/throughput.jsonl"
timeout "${1:-240}" $P -m benchmarks.synthetic --no-saelens --device cuda --d 256 --tokens 20971520 \
  --settings s2 s4c s8h --threads 8 2>&1 | tail -40 | tee "$OUT/synthetic.txt"
