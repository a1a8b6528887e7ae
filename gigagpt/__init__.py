"""gigagpt: one GPT-2 model and one training loop, from a laptop CPU to 175B parameters."""
import importlib
import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. Where other processes share the cores,
# spinning threads starve the ones doing the work: on a 2-core machine at load 4, CPU training steps ran
# 3-8x slower; unloaded, no difference showed. Only takes effect if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gigagpt.errors import GigaGPTError  # noqa: E402  (standard library only)

# The rest imports torch, so it loads on first use: `gigagpt doctor` must start where torch is missing or broken.
_EXPORTS = {"GPT": "gigagpt.model", "GPTConfig": "gigagpt.model", "Config": "gigagpt.config",
            "RunConfig": "gigagpt.config", "load_config": "gigagpt.config"}
__all__ = [*_EXPORTS, "GigaGPTError"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    try:  # submodules: `from gigagpt import data, scaling`
        return importlib.import_module(f"gigagpt.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"gigagpt.{name}":
            raise
        raise AttributeError(f"module 'gigagpt' has no attribute {name!r}") from None
