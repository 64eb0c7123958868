"""A stand-in for `jumpscope train` in runner tests: logs metrics, checkpoints, honours --resume.

usage: fake_train.py OUT_DIR STEPS SLEEP [--resume] [--fail-at N]
"""

import json
import os
import sys
import time
from pathlib import Path

out, steps, sleep = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
resume = "--resume" in sys.argv
fail_at = int(sys.argv[sys.argv.index("--fail-at") + 1]) if "--fail-at" in sys.argv else None
out.mkdir(parents=True, exist_ok=True)
ckpt = out / "checkpoints" / "step.json"
start = json.loads(ckpt.read_text())["step"] if resume and ckpt.exists() else 0
print(f"fake train: start at {start} (resume={resume})", flush=True)
with open(out / "metrics.jsonl", "a") as fh:
    for step in range(start + 1, steps + 1):
        time.sleep(sleep)
        if fail_at is not None and step == fail_at and not resume:
            print("fake train: boom", flush=True)
            sys.exit(3)
        fh.write(json.dumps({"step": step, "total_steps": steps, "loss": 1.0 / step, "l0": 10.0 + step}) + "\n")
        fh.flush()
        ckpt.parent.mkdir(exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")  # atomic, like the real trainer: a kill never leaves half a checkpoint
        tmp.write_text(json.dumps({"step": step}))
        os.replace(tmp, ckpt)
for name in ("cfg.json", "sae_weights.safetensors"):
    (out / name).write_text("{}")
print("fake train: done", flush=True)
