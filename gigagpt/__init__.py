"""gigagpt: one GPT-2 model and one training loop, from a laptop CPU to 175B parameters."""
from gigagpt.config import Config, RunConfig, load_config
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "Config", "RunConfig", "load_config", "GigaGPTError"]
__version__ = "0.1.0"
