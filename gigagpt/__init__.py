"""gigagpt: one GPT-2 model and one training loop, from a laptop CPU to 175B parameters."""
import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. Where other processes share the cores,
# spinning threads starve the ones doing the work: on a 2-core machine at load 4, CPU training steps ran
# 3-8x slower; unloaded, no difference showed. Only takes effect if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gigagpt.config import Config, RunConfig, load_config
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "Config", "RunConfig", "load_config", "GigaGPTError"]
__version__ = "0.1.0"
