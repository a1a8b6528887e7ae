#!/usr/bin/env bash
# Remake data/shakespeare_char_pretrained.pt: the checkpoint notebook 03 loads with `use_pretrained = True`
# (for a laptop too slow to train). It is notebook 03's default run, made by `gigagpt train` itself, in fp32 so that
# any CPU makes the same model (up to rounding), then stripped to weights, config and tokenizer (no AdamW state:
# a third of the size, and nothing a learner needs to sample or to look inside).
#
#     scripts/make_pretrained.sh        # ~5 min on 2 cores; prints the new sha256 and validation loss
#
# Rounding differs between CPUs and thread counts, so a remade file has another sha256: put the printed one into
# gigagpt/shipped.py (PRETRAINED_SHA256), or `gigagpt doctor` and tests/test_pretrained.py report it as corrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUN=out/pretrained  # scratch: the full run, with AdamW state and metrics.jsonl
TARGET=data/shakespeare_char_pretrained.pt

"$PYTHON" -m gigagpt prepare data/tinyshakespeare.txt --tokenizer char --out data/shakespeare_char
rm -rf "$RUN"  # a fresh run, not a resumed or appended one
# notebook 03's parameters cell (width ... seed) and its overrides; dtype pinned to fp32 (auto picks bf16 on some CPUs)
time "$PYTHON" -m gigagpt train configs/shakespeare_char.yaml --width 128 --depth 4 --heads 4 --sequence_length 64 \
    --batch_size 16 --num_steps 2000 --dropout 0.0 --seed 1 --checkpoint_steps 1000 --eval_interval 250 \
    --device cpu --dtype float32 --out_dir "$RUN"

"$PYTHON" - "$RUN/checkpoint_2000.pt" "$TARGET" <<'EOF'
import hashlib, json, sys
from pathlib import Path
from gigagpt import checkpoint

source, target = sys.argv[1:]
state = checkpoint.load(source)
checkpoint.save({key: state[key] for key in ("model", "config", "tokenizer", "step")}, target)
rows = [json.loads(line) for line in Path(source).with_name("metrics.jsonl").read_text().splitlines()]
print(f"{target}: {Path(target).stat().st_size / 2**20:.2f} MiB, step {state['step']}, "
      f"validation loss {rows[-1]['val_loss']:.4f}")
print(f'PRETRAINED_SHA256 = "{hashlib.sha256(Path(target).read_bytes()).hexdigest()}"  # for gigagpt/shipped.py')
EOF
