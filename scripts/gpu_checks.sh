#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with one CUDA GPU (H100/H200): what CPU-only CI cannot see.
#
#   bash scripts/gpu_checks.sh [OUT_DIR]       # ~5-8 minutes; results and logs in OUT_DIR (default out/gpu_checks)
#
# 1. gigagpt bench of the 1.3B config in bf16: eager, torch.compile, and the plain vs chunked LM-head loss
#    (MFU against the GPU's dense bf16 datasheet peak, scaling.ACCELERATORS; the goal is >= 45%).
# 2. The FSDP backend's NCCL path on one GPU: 20 steps of a small model under torchrun, then a resume from its
#    distributed checkpoint, which must repeat the straight run's losses exactly.
# Needs gigagpt installed with a CUDA build of torch (pip install -e . in an environment that has one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${1:-$ROOT/out/gpu_checks}")"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
cd "$ROOT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(0), torch.__version__)" \
    | tee "$OUT/device.txt"
"$PY" -m gigagpt prepare data/tinyshakespeare.txt --tokenizer gpt2 --out "$OUT/data"

# 1. bench: micro-batch 8 x 2048 tokens of the 1.3B model (fits one 80 GB GPU with activations kept)
"$PY" -m gigagpt bench configs/1p3b.yaml --dataset "$OUT/data" --batch_size 8 --device cuda \
    --variants bf16+plain,bf16+chunked,bf16+compile,bf16+compile+chunked --seconds 30 --steps 20 \
    --text "" --json "$OUT/bench_1p3b.json" 2>&1 | tee "$OUT/bench_1p3b.txt"

# 2. FSDP2 over NCCL on one GPU: train, resume from the distributed checkpoint, compare
common=(configs/shakespeare.yaml --dataset "$OUT/data" --device cuda --num_steps 20 --checkpoint_steps 10
        --log_interval 1 --eval_steps 2 --backend fsdp)
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m gigagpt train "${common[@]}" \
    --out_dir "$OUT/fsdp" 2>&1 | tail -3 | tee "$OUT/fsdp.txt"
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m gigagpt train "${common[@]}" \
    --out_dir "$OUT/fsdp_resumed" --checkpoint_path "$OUT/fsdp/checkpoint_10" 2>&1 | tail -3 | tee -a "$OUT/fsdp.txt"
"$PY" - "$OUT" <<'EOF' | tee -a "$OUT/fsdp.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = lambda d: {r["step"]: r["loss"] for r in map(json.loads, (out / d / "metrics.jsonl").read_text().splitlines())}
straight, resumed = rows("fsdp"), rows("fsdp_resumed")
same = all(straight[s] == loss for s, loss in resumed.items())
print(f"FSDP/NCCL resume: steps {min(resumed)}-{max(resumed)} {'identical' if same else 'DIFFERENT'} to the straight run")
sys.exit(0 if same else 1)
EOF
echo "gpu_checks: done; results in $OUT"
