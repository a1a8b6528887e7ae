"""gigagpt against nanoGPT's train.py on this CPU, side by side: the same model shape, data and batch.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT          # nanoGPT is not part of this project
    python scripts/bench_vs_nanogpt.py --nanogpt /tmp/nanoGPT            # nanoGPT's shakespeare_char shape
    python scripts/bench_vs_nanogpt.py --nanogpt /tmp/nanoGPT --shape readme_cpu   # its README's CPU recipe
    python scripts/bench_vs_nanogpt.py --nanogpt /tmp/nanoGPT --avx2      # as on a CPU with AVX2 only

The two take turns (rounds of `--steps` training steps each), so a change in the machine's load hits both.
nanoGPT runs in fp32 on a CPU (its train.py uses autocast only on CUDA); gigagpt runs its defaults
(`dtype: auto`, `attention: auto`, fused AdamW) and, for reference, in fp32. Tokens/s are medians over
all steps but the first few of each round. `--avx2` caps PyTorch, oneDNN and MKL at AVX2, as on most
laptops and AMD Zen 3 (bf16 is then emulated, and `dtype: auto` picks fp32).
"""
import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {  # nanoGPT's config/train_shakespeare_char.py at batch 8, and the CPU recipe in its README
    "shakespeare_char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8),
    "readme_cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
}
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def nanogpt_data(work):
    """nanoGPT's data/shakespeare_char layout from gigagpt's preparation (the same uint16 .bin files)."""
    from gigagpt.data import prepare

    folder = work / "data" / "shakespeare_char"
    meta = prepare(ROOT / "data" / "tinyshakespeare.txt", folder, tokenizer="char")
    chars = meta["chars"]
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    return folder


def run_nanogpt(nanogpt, work, shape, steps, env):
    args = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
            "--dropout=0.0", f"--max_iters={steps}", f"--lr_decay_iters={steps}", "--eval_iters=1",
            "--eval_interval=100000", "--log_interval=1", f"--out_dir={work / 'nanogpt_out'}",
            *(f"--{k}={v}" for k, v in shape.items())]
    # nanoGPT reads data/<dataset> relative to its working directory: run it in `work`, with its code there
    for name in ("train.py", "model.py", "configurator.py", "config"):
        target = work / name
        if not target.exists():
            (shutil.copytree if (nanogpt / name).is_dir() else shutil.copy)(nanogpt / name, target)
    out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    ms = [float(t) for t in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", out, re.MULTILINE)]
    tokens = shape["batch_size"] * shape["block_size"]
    return [tokens / (t / 1e3) for t in ms[3:]]


def run_gigagpt(work, shape, steps, env, extra):
    out_dir = work / "gigagpt_out"
    shutil.rmtree(out_dir, ignore_errors=True)
    args = [sys.executable, "-m", "gigagpt", "train", str(ROOT / "configs" / "shakespeare_char.yaml"),
            "--dataset", str(work / "data" / "shakespeare_char"), "--out_dir", str(out_dir),
            "--depth", str(shape["n_layer"]), "--heads", str(shape["n_head"]), "--width", str(shape["n_embd"]),
            "--sequence_length", str(shape["block_size"]), "--batch_size", str(shape["batch_size"]),
            "--num_steps", str(steps), "--log_interval", "1", "--eval_steps", "1", "--eval_interval", "0",
            "--checkpoint_steps", "0", "--dropout", "0.0", *extra]
    subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens_per_s"] for r in rows[3:-1]]  # the last step also evaluates and saves


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", required=True, type=Path, help="a checkout of github.com/karpathy/nanoGPT")
    parser.add_argument("--shape", default="shakespeare_char", choices=SHAPES)
    parser.add_argument("--steps", type=int, default=30, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--avx2", action="store_true", help="cap PyTorch, oneDNN and MKL at AVX2")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "vs_nanogpt")
    args = parser.parse_args()

    shape, work = SHAPES[args.shape], args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    nanogpt_data(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(AVX2 if args.avx2 else {})}
    runs = {"nanoGPT (fp32)": [], "gigagpt (defaults)": [], "gigagpt (fp32)": []}
    for _ in range(args.rounds):
        runs["nanoGPT (fp32)"] += run_nanogpt(args.nanogpt, work, shape, args.steps, env)
        runs["gigagpt (defaults)"] += run_gigagpt(work, shape, args.steps, env, [])
        runs["gigagpt (fp32)"] += run_gigagpt(work, shape, args.steps, env, ["--dtype", "float32"])
    base = statistics.median(runs["nanoGPT (fp32)"])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?")
    print(f"{args.shape} {shape}, {args.rounds} rounds x {args.steps} steps, {cpu}"
          f"{' capped at AVX2' if args.avx2 else ''}, load {os.getloadavg()[0]:.1f}")
    for name, speeds in runs.items():
        median = statistics.median(speeds)
        print(f"  {name:<20} {median:>9,.0f} tokens/s  {median / base:.2f}x nanoGPT  ({len(speeds)} steps)")


if __name__ == "__main__":
    main()
