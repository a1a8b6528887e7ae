"""`gigagpt bench`: how fast training runs here, measured against what this machine can do at all.

    gigagpt bench configs/shakespeare_char.yaml           # table to the terminal, JSON to out/bench.json
    gigagpt bench configs/111m.yaml --batch_size 8 --sequence_length 256 --variants fp32,bf16

1. Peak: one large matmul per precision, timed like everything else (median). No training step does better,
   so it is the honest denominator of model FLOPs utilization (MFU). bf16 is measured where the hardware
   has fast bf16 (or a variant asks for it): where it is emulated one matmul takes minutes at full size.
2. Per config: the step `gigagpt train` runs (`train.make_training_step`: forward, backward, clipping,
   AdamW, schedule) in the variants that matter. MFU = model FLOPs per step (`scaling.flops_per_token`, the
   same count for every variant) / median step time / peak, against the measured peak and against the
   nominal one (a GPU's datasheet; for a CPU an estimate): label which one you quote.
3. Data: `data.prepare` throughput against raw tiktoken encoding of the same text.

Variants are named precision[+modifier...]: fp32 or bf16 (autocast), then +sdpa or +explicit (attention),
+plain or +chunked (LM-head loss), +compile, +fused, +foreach or +loop (AdamW), +padN (vocabulary padded to
a multiple of N). What a name leaves out is the config's and the backend's default. Every measurement is
bounded by time (`seconds`), not by a count, so the benchmark ends in minutes on any machine. On a CPU the
variants take turns step by step, with the peak matmuls measured in the same turns, so that other work on
the machine slows them all alike; the header reports the load average.
"""
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gigagpt import data, scaling
from gigagpt.backends.plain import TorchBackend
from gigagpt.hardware import cpu_flags, cpu_has_fast_bf16, cpu_info, resolve_device
from gigagpt.errors import GigaGPTError
from gigagpt.lm_loss import use_chunked
from gigagpt.model import attention_kernel
from gigagpt.config import planned_model_config
from gigagpt.train import make_training_step

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
SHORT = {v: k for k, v in DTYPES.items()}


@dataclass
class Variant:
    """One way to run a config's training step; None fields keep the config's (and the backend's) choice."""

    name: str
    dtype: str = None
    attention: str = None
    loss: str = None
    compile: bool = None
    adamw: str = None
    pad_vocab_multiple: int = None

    @classmethod
    def parse(cls, name):
        """'bf16+compile+explicit' -> Variant(dtype='bfloat16', compile=True, attention='explicit')."""
        precision, *modifiers = name.split("+")
        if precision not in DTYPES:
            raise GigaGPTError(f"variant {name!r} must start with fp32 or bf16 (e.g. bf16+compile)")
        variant = cls(name, dtype=DTYPES[precision])
        for m in modifiers:
            if m.startswith("pad") and m[3:].isdigit() and int(m[3:]) > 0:
                variant.pad_vocab_multiple = int(m[3:])
            elif m in ("sdpa", "explicit"):
                variant.attention = m
            elif m in ("plain", "chunked"):
                variant.loss = m
            elif m == "compile":
                variant.compile = True
            elif m in ("fused", "foreach", "loop"):
                variant.adamw = m
            else:
                raise GigaGPTError(f"unknown variant modifier {m!r} in {name!r}: use sdpa, explicit, plain, chunked, "
                                   f"compile, fused, foreach, loop or padN (vocabulary padded to a multiple of N)")
        return variant


def fast_bf16(device):
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_has_fast_bf16()


def default_variants(device):
    """What is worth comparing: the plain baseline (speed-ups are relative to it), then one change at a time.
    bf16 only where the hardware has it: emulated, it only shows that it is slow (one step can take a minute)."""
    if device.type == "cuda":  # torch.optim.AdamW's own default is foreach on GPUs, a Python loop on CPUs
        return ["fp32+foreach", "fp32", "bf16+sdpa", "bf16+explicit", "bf16+chunked", "bf16+pad64", "bf16+compile"]
    names = ["fp32+loop", "fp32", "fp32+sdpa", "fp32+explicit"]
    return names + (["bf16+sdpa", "bf16+explicit"] if fast_bf16(device) else [])


# --- the machine's limit -------------------------------------------------------------------------------------

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class MatmulPeak:
    """FLOP/s of one (size x size) @ (size x size) matmul in `dtype`: the most any training step can reach.

    Without `size`, a quick probe picks one that takes about `seconds` (up to 2048 on a CPU, 8192 on a GPU)."""

    def __init__(self, device, dtype, size=None, seconds=0.1):
        self.device, self.flops_per_s = device, []
        try:
            self.size = size or self._size_for(device, getattr(torch, dtype), seconds)
            self.a, self.b = (torch.randn(self.size, self.size, device=device, dtype=getattr(torch, dtype))
                              for _ in range(2))
            self.measure(1, record=False)  # first-call allocation and kernel selection
        except (RuntimeError, TypeError):  # e.g. no bf16 matmul on this device: MFU shows as "-"
            self.size, self.a = size, None

    @staticmethod
    def _size_for(device, dtype, seconds):
        """Double the size from 256 while one matmul takes under a quarter of `seconds` (small matrices
        underrate a fast CPU; a large one takes minutes where the dtype is emulated)."""
        n, biggest = 256, 8192 if device.type == "cuda" else 2048
        while n < biggest:
            a = torch.randn(n, n, device=device, dtype=dtype)
            for _ in range(2):  # the second one is timed
                synchronize(device)
                start = time.perf_counter()
                a @ a
                synchronize(device)
            if time.perf_counter() - start > seconds / 4:
                break
            n *= 2
        return n

    def measure(self, repeats, record=True):
        for _ in range(repeats if self.a is not None else 0):
            synchronize(self.device)
            start = time.perf_counter()
            self.a @ self.b
            synchronize(self.device)
            if record:
                self.flops_per_s.append(2 * self.size**3 / (time.perf_counter() - start))

    def summary(self, since=0):
        seen = self.flops_per_s[since:]
        return {"size": self.size, "median": statistics.median(seen) if seen else None,
                "best": max(seen, default=None), "samples": len(seen)}


def nominal_peak(device):
    """Datasheet peak FLOP/s {'float32', 'bfloat16', 'source'}; None where unknown.

    GPUs: the vendor's dense numbers (scaling.ACCELERATORS). CPUs: an estimate, threads x clock x FLOPs per
    cycle of the widest matmul instructions the CPU has (AVX-512/AVX2 FMA, AVX512-BF16, AMX) — good to a
    factor of ~1.5 (a VM reports its base clock, not turbo), which is why MFU is also given against the
    measured peak.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        spec = scaling.accelerator(name)
        if spec is None:
            return {"float32": None, "bfloat16": None, "source": f"{name}: not in gigagpt.scaling.ACCELERATORS"}
        return {"float32": spec["fp32_flops"], "bfloat16": spec["peak_flops"], "source": f"{name}: datasheet, dense"}
    info, flags = cpu_info(), cpu_flags()
    mhz = float(info.get("cpu MHz", 0) or 0)
    try:  # the boost clock, where the OS shows it (not in most VMs)
        mhz = max(mhz, int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000)
    except (OSError, ValueError):
        pass
    if device.type != "cpu" or not mhz:
        return {"float32": None, "bfloat16": None, "source": "unknown"}
    zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"
    if "avx512f" in flags:
        fp32 = 32 if zen4 else 64  # two 512-bit FMA units; Zen 4 runs 512-bit FMAs on 256-bit units
    else:
        fp32 = 32 if "fma" in flags else 8
    bf16 = 1024 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else None  # None: emulated
    threads = torch.get_num_threads()
    hz = threads * mhz * 1e6
    return {"float32": hz * fp32, "bfloat16": hz * bf16 if bf16 else None,
            "source": f"estimate: {threads} threads x {mhz / 1000:.2f} GHz (reported clock; turbo may be higher) x "
                      f"{fp32} (fp32) / {bf16 or 'no'} (bf16) FLOP/cycle"}


def machine(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_info().get("model name") or platform.processor() or platform.machine()
    flags = cpu_flags()
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
            "cpu_flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
            "fast_bf16": fast_bf16(device),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# --- the training step ---------------------------------------------------------------------------------------

def _tensor_bytes(tensors):
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors if torch.is_tensor(t)}
    return sum(unique.values())


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the profiler's C++ start/stop lines (written straight to file descriptor 2)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved), os.close(devnull)


def _profiled_peak_bytes(fn):
    """Peak growth of CPU tensor memory while fn() runs, from the profiler's allocation records."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


class StepRunner:
    """One variant of one config: the model, optimizer and step `train` would build, fed random tokens."""

    def __init__(self, cfg, variant, tokens):
        model_cfg = replace(cfg.model, **{k: getattr(variant, k) for k in ("attention", "loss", "pad_vocab_multiple")
                                          if getattr(variant, k) is not None})
        run = replace(cfg.run, dtype=variant.dtype or cfg.run.dtype, num_steps=10**9, decay_steps=cfg.run.decay_steps,
                      compile=cfg.run.compile if variant.compile is None else variant.compile)
        self.backend = backend = TorchBackend(run)
        backend.adamw = variant.adamw
        backend.check_fits(model_cfg)  # a clear "needs N GiB" instead of an out-of-memory crash
        gc.collect()  # the previous variant's tensors
        if backend.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(backend.device)
        self.model = backend.build_model(model_cfg)
        self.optimizer = optimizer = backend.make_optimizer(self.model)
        self.step = make_training_step(backend, self.model, optimizer, backend.make_scheduler(optimizer))
        self.batches = backend.batches(tokens, 0)
        d = optimizer.defaults
        kernel = attention_kernel(model_cfg.attention, backend.device.type, getattr(torch, backend.dtype),
                                  run.sequence_length)
        loss = "chunked" if use_chunked(model_cfg.loss, model_cfg.vocab_size) else "plain"
        self.settings = {"dtype": backend.dtype, "attention": kernel, "loss": loss,
                         "compile": run.compile, "padded_vocab_size": model_cfg.padded_vocab_size,
                         "optimizer": "fused" if d.get("fused") else "foreach" if d.get("foreach") else "loop"}
        self.step_seconds, self.data_seconds, self.first_step_s, self.loss = [], [], None, None

    def time_steps(self, n, record=True):
        device = self.backend.device
        for _ in range(n):
            start = time.perf_counter()
            _, x, y = next(self.batches)
            synchronize(device)
            loaded = time.perf_counter()
            loss, _ = self.step(x, y)
            synchronize(device)
            end = time.perf_counter()
            if self.first_step_s is None:
                self.first_step_s = end - loaded  # includes torch.compile's compilation
            elif record:
                self.step_seconds.append(end - loaded)
                self.data_seconds.append(loaded - start)
        self.loss = float(loss)

    def peak_memory(self):
        """Bytes of tensors at the peak of a step: the allocator's count on a GPU; on a CPU, weights and
        optimizer state plus the most the profiler sees a step allocate on top (activations, gradients)."""
        device = self.backend.device
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device)
        if device.type != "cpu":
            return None
        state = [t for s in self.optimizer.state.values() for t in s.values()]
        resident = _tensor_bytes([*self.model.parameters(), *self.model.buffers(), *state])
        return resident + _profiled_peak_bytes(lambda: self.time_steps(1, record=False))


def bench_config(cfg, variants, peaks, seconds=15.0, max_steps=20, warmup=1, log=print):
    """Time `variants` of the training step of `cfg`, each for about `seconds` (at least 2, at most max_steps
    timed steps); returns the config's result dict (rows per variant).

    peaks: {"float32": MatmulPeak, "bfloat16": MatmulPeak or None, "nominal": nominal_peak(device)}.
    """
    run, m = cfg.run, planned_model_config(cfg)[0]  # vocab_size and positions as training would have them
    cfg = replace(cfg, model=m)
    device = resolve_device(run.device)
    micro_batch = run.batch_size // run.gradient_accumulation_steps
    tokens_per_step = run.batch_size * run.sequence_length
    flops_per_step = scaling.flops_per_token(m, run.sequence_length) * tokens_per_step
    tokens = np.random.default_rng(0).integers(0, m.vocab_size, size=max(1 << 20, 4 * tokens_per_step), dtype=np.uint16)
    variants = [Variant.parse(v) if isinstance(v, str) else v for v in variants] + [Variant("default*")]

    # On a CPU, keep every variant alive and let them take turns step by step, with the peak matmul measured
    # in the same turns: all see the same background load. Where that would not fit (or on a GPU, which
    # nothing else shares), one variant after another against the peak measured at the start.
    need = scaling.training_memory(m, micro_batch, run.sequence_length, "float32")["total"] * len(variants)
    interleave = device.type == "cpu" and need < 0.5 * scaling.available_memory("cpu")
    rows, runners = [], []
    for variant in variants:
        row = {"variant": variant.name}
        rows.append(row)
        try:
            runner = StepRunner(cfg, variant, tokens)
            row.update(runner.settings)
            duplicate = next((r for r in rows[:-1] if all(r.get(k) == row[k] for k in runner.settings)), None)
            if duplicate:  # e.g. the default is one of the named variants: time it once
                rows.pop()
                duplicate["variant"] += "*" if variant.name == "default*" else f" = {variant.name}"
                continue
            log(f"  {variant.name}: warming up")
            runner.time_steps(warmup + 1, record=False)  # the first step (compilation, lazy state), then `warmup` more
            row["peak_memory_bytes"] = runner.peak_memory()
            if interleave:
                runners.append((row, runner))
            else:
                _time_until(seconds, max_steps, [runner.time_steps], [])
                _finish(row, runner, tokens_per_step, flops_per_step, peaks)
                del runner
        except (GigaGPTError, torch.OutOfMemoryError) as e:
            row["skipped"] = str(e).splitlines()[0]
        except Exception as e:  # e.g. torch.compile without a C++ compiler: report it, bench the rest
            row["skipped"] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    matmuls = [p for p in (peaks["float32"], peaks["bfloat16"]) if p is not None]
    since = {id(p): len(p.flops_per_s) for p in matmuls}
    if runners:
        log(f"  {len(runners)} variants taking turns for ~{seconds * len(runners):.0f} s")
        _time_until(seconds * len(runners), max_steps, [r.time_steps for _, r in runners], [p.measure for p in matmuls])
    for row, runner in runners:
        _finish(row, runner, tokens_per_step, flops_per_step, peaks, since)

    baseline = rows[0] if "tokens_per_s" in rows[0] else None  # the first variant listed
    for row in rows:
        if baseline and "tokens_per_s" in row:
            row["speedup"] = row["tokens_per_s"] / baseline["tokens_per_s"]
    return {"model": {k: getattr(m, k) for k in ("width", "depth", "heads", "vocab_size", "attention", "loss")},
            "parameters": scaling.param_count(m), "batch_size": run.batch_size, "micro_batch": micro_batch,
            "sequence_length": run.sequence_length, "tokens_per_step": tokens_per_step,
            "flops_per_step": flops_per_step, "baseline": baseline and baseline["variant"], "interleaved": interleave,
            "peak": {dtype: peaks[dtype].summary(since.get(id(peaks[dtype]), 0)) if peaks[dtype] else None
                     for dtype in ("float32", "bfloat16")},
            "variants": rows}


def _time_until(seconds, max_steps, steppers, measures):
    """Turns of one step of each stepper (and one of each peak measurement) until `seconds` have passed
    (at least 2 turns, at most max_steps)."""
    start, turns = time.perf_counter(), 0
    while turns < 2 or (turns < max_steps and time.perf_counter() - start < seconds):
        for fn in [*measures, *steppers]:
            fn(1)
        turns += 1


def _finish(row, runner, tokens_per_step, flops_per_step, peaks, since=None):
    """Step statistics and MFU, against the peak measured beside the steps (interleaved) or at the start."""
    step_s = statistics.median(runner.step_seconds)
    flops = flops_per_step / step_s
    row.update(step_s=step_s, step_s_best=min(runner.step_seconds), steps=len(runner.step_seconds),
               first_step_s=runner.first_step_s, data_s=statistics.median(runner.data_seconds),
               tokens_per_s=tokens_per_step / step_s, flops_per_s=flops, train_loss=runner.loss)
    peak = peaks[row["dtype"]]
    measured = peak.summary((since or {}).get(id(peak), 0))["median"] if peak else None
    nominal = peaks["nominal"][row["dtype"]]
    row["mfu_measured"] = flops / measured if measured else None
    row["mfu_nominal"] = flops / nominal if nominal else None


# --- data preparation ----------------------------------------------------------------------------------------

def bench_data(text_file, tokenizer="gpt2"):
    """Tokens/s of `data.prepare` (read, hash, encode in parallel, write) vs. raw tiktoken on the same text."""
    from gigagpt.tokenizer import get_encoding

    text = Path(text_file).read_text(encoding="utf-8")
    enc = get_encoding(tokenizer)
    threads = os.cpu_count() or 1
    enc.encode_ordinary(text[:10_000])  # warm-up
    start = time.perf_counter()
    n = len(enc.encode_ordinary(text))
    one_thread = time.perf_counter() - start
    chunks = [text[i:i + (1 << 16)] for i in range(0, len(text), 1 << 16)]  # cuts may split a word: speed only
    start = time.perf_counter()
    enc.encode_ordinary_batch(chunks, num_threads=threads)
    batched = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        meta = data.prepare(text_file, tmp, tokenizer=tokenizer)
        prepare_s = time.perf_counter() - start
        tokens = data.load_tokens(tmp, "train")
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(100):
            data.get_batch(tokens, 32, 256, rng)
        batch_s = (time.perf_counter() - start) / 100
    return {"text": str(text_file), "characters": len(text), "tokens": n, "tokenizer": tokenizer,
            "threads": threads, "tiktoken_1_thread_tokens_per_s": n / one_thread,
            "tiktoken_batch_tokens_per_s": n / batched,
            "prepare_tokens_per_s": (meta["train_tokens"] + meta["val_tokens"]) / prepare_s,
            "get_batch_32x256_s": batch_s}


# --- the whole benchmark -------------------------------------------------------------------------------------

def run_bench(config_paths=(), overrides=None, variants=None, seconds=15.0, max_steps=20, warmup=1, text_file=None,
              json_path=None, matmul_size=None, log=print):
    """Measure the peaks, every config in every variant, and data preparation; returns (and saves) a dict."""
    from gigagpt.config import load_config

    overrides = dict(overrides or {})
    configs = {str(p): load_config(p, **overrides) for p in config_paths}  # all errors before any timing
    device = resolve_device(overrides.get("device", next(iter(configs.values())).run.device if configs else "auto"))
    names = variants or default_variants(device)
    parsed = [Variant.parse(name) for name in names]
    result = {"machine": machine(device), "overrides": overrides, "configs": {},
              "settings": {"seconds": seconds, "max_steps": max_steps, "warmup": warmup, "variants": names}}
    bf16 = fast_bf16(device) or any(v.dtype == "bfloat16" for v in parsed) or any(
        c.run.dtype == "bfloat16" for c in configs.values())
    log(f"peak matmul on {device} (fp32{', bf16' if bf16 else ''}; bf16 is {'fast' if fast_bf16(device) else 'slow'}"
        f" here) ...")
    peaks = {"float32": MatmulPeak(device, "float32", matmul_size),
             "bfloat16": MatmulPeak(device, "bfloat16", matmul_size) if bf16 else None}
    _time_until(2.0, 20, [p.measure for p in peaks.values() if p is not None], [])
    peaks["nominal"] = nominal_peak(device)
    result["peak"] = {"measured": {dtype: peaks[dtype] and peaks[dtype].summary() for dtype in ("float32", "bfloat16")},
                      "nominal": peaks["nominal"]}
    for path, cfg in configs.items():
        log(f"{path}: {', '.join(names)} (+ default)")
        result["configs"][path] = bench_config(cfg, parsed, peaks, seconds, max_steps, warmup, log)
    if text_file and Path(text_file).is_file():
        log(f"data preparation: {text_file}")
        result["data"] = bench_data(text_file)
    result["machine"]["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _num(x, scale=1.0, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x / scale)


def format_table(result):
    """The result as text: header, peaks, one table per config, data preparation."""
    mach, peak = result["machine"], result["peak"]
    G = 1e9
    lines = [f"gigagpt bench on {mach['device']}: {mach['name']}, {mach['threads']} threads, torch {mach['torch']}"
             f" ({mach['cpu_capability']}; {' '.join(mach['cpu_flags']) or 'no AVX2'}); load average "
             f"{mach['load_average']:.1f} before, {mach.get('load_average_after') or 0:.1f} after"]
    for dtype in ("float32", "bfloat16"):
        m = peak["measured"][dtype]
        if m is None:
            lines.append(f"  peak bf16 matmul: not measured (bf16 is emulated here, far slower than fp32; "
                         f"ask for a bf16 variant to measure it)")
            continue
        lines.append(f"  peak {SHORT[dtype]} matmul {m['size']}^2: {_num(m['median'], G)} GFLOP/s median "
                     f"(best {_num(m['best'], G)}); nominal {_num(peak['nominal'][dtype], G)}")
    lines.append(f"  nominal: {peak['nominal']['source']}")
    for path, c in result["configs"].items():
        lines += ["", f"{path}: {c['parameters'] / 1e6:,.1f}M parameters, batch {c['batch_size']} x "
                      f"{c['sequence_length']} = {c['tokens_per_step']:,} tokens/step, "
                      f"{c['flops_per_step'] / G:,.1f} GFLOP/step"]
        if c["interleaved"]:
            p = {d: (c["peak"][d] or {}).get("median") for d in ("float32", "bfloat16")}
            lines.append(f"  variants took turns, step by step, with the peak matmuls: fp32 {_num(p['float32'], G)}, "
                         f"bf16 {_num(p['bfloat16'], G)} GFLOP/s (median) meanwhile; MFU meas is against these")
        head = (f"  {'variant':<22}{'dtype':>6}{'attn':>9}{'loss':>8}{'compile':>8}{'adamw':>8}{'step ms':>9}"
                f"{'tokens/s':>10}{'speedup':>8}{'MFU meas':>9}{'MFU nom':>8}{'mem MiB':>8}{'1st s':>7}{'steps':>6}")
        lines += [head, "  " + "-" * (len(head) - 2)]
        for r in c["variants"]:
            if "skipped" in r:
                lines.append(f"  {r['variant']:<22}skipped: {r['skipped']}")
                continue
            pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
            lines.append(
                f"  {r['variant']:<22}{SHORT[r['dtype']]:>6}{r['attention']:>9}{r['loss']:>8}"
                f"{'yes' if r['compile'] else 'no':>8}{r['optimizer']:>8}{_num(r['step_s'], 1e-3, '{:,.1f}'):>9}"
                f"{_num(r['tokens_per_s']):>10}{_num(r.get('speedup'), 1, '{:.2f}x'):>8}{pct(r['mfu_measured']):>9}"
                f"{pct(r['mfu_nominal']):>8}{_num(r['peak_memory_bytes'], 2**20):>8}"
                f"{_num(r['first_step_s'], 1, '{:.1f}'):>7}{r['steps']:>6}")
        lines.append("  * what `gigagpt train` runs with this config; speed-up against the first row; "
                     "MFU against the measured and the nominal peak of the row's precision")
    d = result.get("data")
    if d:
        M = 1e6
        lines += ["", f"data preparation ({d['tokenizer']}, {d['text']}, {d['tokens']:,} tokens, "
                      f"{d['threads']} threads): tiktoken {d['tiktoken_1_thread_tokens_per_s'] / M:.2f}M tokens/s on 1 thread, "
                      f"{d['tiktoken_batch_tokens_per_s'] / M:.2f}M batched; gigagpt prepare "
                      f"{d['prepare_tokens_per_s'] / M:.2f}M tokens/s; get_batch(32 x 256) "
                      f"{d['get_batch_32x256_s'] * 1e3:.2f} ms"]
    return "\n".join(lines)
