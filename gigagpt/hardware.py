"""What this machine has, and the choices that follow from it: device, precision (`dtype: auto`).

Defaults that depend on the hardware are decided here from what the hardware has, never pinned in a config
from one machine's measurement. (The attention kernel is chosen per call in model.py, from the tensors.)
"""
import functools
import os

import torch

from gigagpt.errors import GigaGPTError


def resolve_device(name="auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GigaGPTError(f"device {name!r} asked for, but torch sees no CUDA GPU: use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GigaGPTError(f"device {name!r} asked for, but MPS is not available: use --device cpu")
    return device


@functools.lru_cache(maxsize=None)
def cpu_info():
    """The first processor's entries of /proc/cpuinfo (Linux), e.g. 'model name', 'flags'; {} elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}


def cpu_flags():
    """The CPU's instruction-set flags that PyTorch's kernels may use: /proc/cpuinfo's, less what oneDNN's
    ONEDNN_MAX_CPU_ISA (where set lower, e.g. AVX2) rules out."""
    flags = set(cpu_info().get("flags", "").split())
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT"):
        if "AMX" not in isa:
            flags -= {"amx_bf16", "amx_tile", "amx_int8"}
        if "BF16" not in isa and "AMX" not in isa:
            flags.discard("avx512_bf16")
        if "AVX512" not in isa and "AMX" not in isa:
            flags = {f for f in flags if not f.startswith("avx512")}
    return flags


def cpu_has_fast_bf16():
    """Whether bf16 matmuls beat fp32 here: CPUs with AMX tiles (Xeon Sapphire Rapids and later) or
    AVX512-BF16 (Zen 4, Cooper Lake). Without either (AVX2-only laptops, Zen 3), bf16 is emulated and a
    matmul runs ~300x slower than fp32."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_dtype(name, device):
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_fast_bf16() else "float32"
    return "float32"  # MPS: bf16 autocast support varies with the macOS version
