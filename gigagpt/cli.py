"""The `gigagpt` command: prepare, train, sample, info, convert, bench."""
import argparse
import sys

from gigagpt.errors import GigaGPTError


def cmd_prepare(args):
    from gigagpt import data

    meta = data.prepare(args.text_file, args.out, tokenizer=args.tokenizer)
    print(f"{args.out}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
          f"({meta['tokenizer']}, vocabulary {meta['vocab_size']:,})")


def cmd_train(args, overrides):
    from gigagpt.config import load_config
    from gigagpt.train import train

    cfg = load_config(args.config, **overrides)
    rows = train(cfg)
    if rows:
        last = rows[-1]
        val = f", val loss {last['val_loss']:.4f}" if last.get("val_loss") is not None else ""
        print(f"step {last['step']}: loss {last['loss']:.4f}{val}, {last['tokens_per_s']:,.0f} tokens/s")


def cmd_sample(args):
    from gigagpt.sample import load_model, sample

    if (args.checkpoint is None) == (args.pretrained is None):
        raise GigaGPTError("give one of --checkpoint FILE (a gigagpt checkpoint) or --pretrained NAME_OR_FOLDER "
                           "(a Hugging Face GPT-2, e.g. gpt2)")
    if args.checkpoint:
        model, encoding = load_model(args.checkpoint, args.device)
    else:
        from gigagpt.hardware import resolve_device
        from gigagpt.hf import from_pretrained
        from gigagpt.tokenizer import get_encoding

        model, encoding = from_pretrained(args.pretrained).to(resolve_device(args.device)), get_encoding("gpt2")
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        print(sample(model, encoding, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                     seed))
        print("-" * 40)


def cmd_convert(args):
    from gigagpt.checkpoint import convert_distributed

    print(f"{convert_distributed(args.checkpoint_dir, args.out)}: single-file checkpoint (for sample, hf, one device)")


def cmd_info(args, overrides):
    from gigagpt import scaling
    from gigagpt.config import load_config
    from gigagpt.config import planned_model_config

    cfg = load_config(args.config, **overrides)
    r = cfg.run
    m, from_data = planned_model_config(cfg)
    if not from_data and "vocab_size" not in cfg.pinned:
        print(f"(no dataset at {r.dataset}: vocab_size {m.vocab_size:,} assumed; training takes it from the data)")
    G = scaling.GiB
    n, n_body = scaling.param_count(m), scaling.param_count(m, embeddings=False)
    print(f"{args.config}: width {m.width}, depth {m.depth}, heads {m.heads}, vocab {m.vocab_size}, "
          f"positions {m.max_position_embeddings}")
    print(f"parameters            {n:>22,}  ({n / 1e9:.3f} B)")
    print(f"  non-embedding       {n_body:>22,}")
    for name, count in scaling.param_breakdown(m).items():
        print(f"  {name:<19} {count:>22,}  ({count / n:.1%})")
    print(f"weights               fp32 {4 * n / G:>10,.2f} GiB   bf16 {2 * n / G:>10,.2f} GiB")
    print(f"gradients             fp32 {4 * n / G:>10,.2f} GiB   bf16 {2 * n / G:>10,.2f} GiB")
    print(f"AdamW state (2 x fp32)     {8 * n / G:>10,.2f} GiB")
    for dtype in ("float32", "bfloat16"):
        act = scaling.activation_bytes(m, r.batch_size, r.sequence_length, dtype)
        one = scaling.activation_bytes(m, 1, r.sequence_length, dtype)
        print(f"activations {dtype:<9} {act / G:>15,.2f} GiB  for batch {r.batch_size} x {r.sequence_length} "
              f"in one pass ({one / G:,.2f} GiB per sequence)")
    print(f"training state        {16 * n / G:>15,.2f} GiB  (fp32 weights + gradients + AdamW: 16 bytes/param)")
    for gpu in ("H100", "H200"):
        gpus = scaling.gpus_needed(m, r.sequence_length, scaling.ACCELERATORS[gpu]["memory"])
        print(f"{gpu}s to train (FSDP)  {gpus if gpus else 'no number: add tensor parallelism':>15}  "
              f"(bf16, activation checkpointing, one sequence per GPU)")
    fpt = scaling.flops_per_token(m, r.sequence_length)
    print(f"training FLOPs/token  {fpt:>22,.0f}  (6N = {6 * n:,.0f} + attention)")
    print(f"FLOPs per step        {fpt * r.batch_size * r.sequence_length:>22.3e}")


def cmd_bench(args, overrides):
    from gigagpt.bench import format_table, run_bench

    variants = args.variants.split(",") if args.variants else None
    result = run_bench(args.configs, overrides, variants, args.seconds, args.steps, args.warmup, args.text,
                       args.json, args.matmul_size, log=lambda msg: print(msg, file=sys.stderr))
    print(format_table(result))
    print(f"(full results: {args.json})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gigagpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="tokenize a text file into train.bin/val.bin/meta.json")
    p.add_argument("text_file")
    p.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "char"])
    p.add_argument("--out", required=True, help="output folder")
    p = sub.add_parser("train", help="train CONFIG [--key value ...] (any config key)")
    p.add_argument("config")
    p = sub.add_parser("info", help="parameters, memory and FLOPs of CONFIG [--key value ...]")
    p.add_argument("config")
    p = sub.add_parser("sample", help="generate text from a checkpoint or a pretrained GPT-2")
    p.add_argument("--checkpoint", help="a checkpoint_STEP.pt written by gigagpt train (or gigagpt convert)")
    p.add_argument("--pretrained", help="a Hugging Face GPT-2: a name (gpt2, gpt2-medium, ...; downloaded when "
                                        "online) or a folder written by save_pretrained")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max_new_tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy; <1 sharper, >1 flatter")
    p.add_argument("--top_k", type=int, default=200, help="keep the k most likely tokens (0: all)")
    p.add_argument("--top_p", type=float, default=None, help="keep the most likely tokens up to probability p")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--device", default="cpu")
    sub.add_parser("doctor", help="pre-flight check of this machine and environment for the course")
    p = sub.add_parser("convert", help="distributed (FSDP) checkpoint folder -> one .pt checkpoint file")
    p.add_argument("checkpoint_dir", help="out_dir/checkpoint_STEP folder written under torchrun")
    p.add_argument("out", help="the .pt file to write")

    p = sub.add_parser("bench", help="peak FLOP/s, then training speed and MFU of CONFIG ... [--key value ...]")
    p.add_argument("configs", nargs="*", help="configs to time (config-key overrides go after them)")
    p.add_argument("--variants", help="comma-separated, e.g. fp32,bf16,bf16+compile,fp32+explicit,fp32+fused")
    p.add_argument("--seconds", type=float, default=15, help="time each variant's steps for about this long")
    p.add_argument("--steps", type=int, default=20, help="but no more timed steps than this per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    p.add_argument("--text", default="data/tinyshakespeare.txt", help="text for the data-preparation benchmark")
    p.add_argument("--json", default="out/bench.json", help="where to write the full results")
    p.add_argument("--matmul_size", type=int, help="n of the n x n peak matmul (default: what takes ~0.1 s)")

    args, rest = parser.parse_known_args(argv)
    if args.command == "doctor":  # before anything imports torch: it must run in a half-broken environment
        from gigagpt.doctor import main as doctor

        sys.exit(doctor(rest))
    try:
        if args.command in ("train", "info", "bench"):
            from gigagpt.config import parse_overrides

            {"train": cmd_train, "info": cmd_info, "bench": cmd_bench}[args.command](args, parse_overrides(rest))
        else:
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            {"prepare": cmd_prepare, "sample": cmd_sample, "convert": cmd_convert}[args.command](args)
    except GigaGPTError as e:
        print(f"gigagpt {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"gigagpt {args.command}: interrupted (training saves a checkpoint first)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
