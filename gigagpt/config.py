"""Configs: one flat YAML file (as gigaGPT's) -> a model config and the run settings, with clear errors."""
import difflib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from gigagpt import checkpoint, data
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPTConfig


@dataclass
class RunConfig:
    out_dir: str = "out"
    dataset: str = "data/shakespeare_char"  # folder with train.bin, val.bin, meta.json
    batch_size: int = 32  # global batch, in sequences (split across ranks and accumulation steps)
    sequence_length: int = 256
    num_steps: int = 1000
    checkpoint_steps: int = 0  # 0: only at the end
    learning_rate: float = 6e-4
    warmup_steps: int = 100
    decay_steps: typing.Optional[int] = None  # None: num_steps - warmup_steps
    weight_decay: float = 0.1
    max_gradient_norm: float = 1.0
    adam_epsilon: float = 1e-8
    seed: int = 1
    backend: str = "torch"  # torch | fsdp (torchrun) | CSX | CPU (cerebras.pytorch's CPU backend)
    checkpoint_path: typing.Optional[str] = None  # resume from this checkpoint
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | mps
    dtype: str = "auto"  # auto (bf16 where fast) | float32 | bfloat16
    compile: bool = False
    gradient_accumulation_steps: int = 1
    eval_interval: int = 0  # steps between validation losses; 0: only at the end
    eval_steps: int = 20  # batches per validation loss
    log_interval: int = 10
    activation_checkpointing: bool = False
    # Cerebras cluster settings (gigaGPT's names); used by backend CSX only
    num_csx: int = 1
    mgmt_address: typing.Optional[str] = None
    mount_dirs: list = field(default_factory=list)
    python_paths: list = field(default_factory=list)
    compile_crd_memory_gi: typing.Optional[int] = None
    execute_crd_memory_gi: typing.Optional[int] = None
    validate_only: bool = False
    compile_only: bool = False
    artifact_dir: typing.Optional[str] = None  # None: <out_dir>/cerebras

    def __post_init__(self):
        if self.backend not in ("torch", "fsdp", "CSX", "CPU"):
            raise GigaGPTError(f"backend must be one of torch, fsdp, CSX, CPU; got {self.backend!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise GigaGPTError(f"dtype must be auto, float32 or bfloat16; got {self.dtype!r}")
        for name in ("batch_size", "sequence_length", "num_steps", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise GigaGPTError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.gradient_accumulation_steps:
            raise GigaGPTError(
                f"batch_size ({self.batch_size}) must be divisible by "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if self.decay_steps is None:
            self.decay_steps = max(self.num_steps - self.warmup_steps, 1)


@dataclass
class Config:
    model: GPTConfig
    run: RunConfig
    pinned: frozenset = frozenset()  # model keys the config sets; vocab_size and positions otherwise follow the data

    def to_dict(self):
        return {"model": asdict(self.model), "run": asdict(self.run)}


MODEL_KEYS = {f.name: f for f in fields(GPTConfig)}
RUN_KEYS = {f.name: f for f in fields(RunConfig)}


def load_config(path=None, **overrides) -> Config:
    """Read a flat YAML config (model and run keys side by side); keyword arguments override it."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise GigaGPTError(f"config file not found: {path} (the shipped ones are in configs/)")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise GigaGPTError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
        if not isinstance(values, dict):
            raise GigaGPTError(f"{path} must be a mapping of keys to values, got {type(values).__name__}")
    values.update(overrides)
    model, run = {}, {}
    for key, value in values.items():
        spec = MODEL_KEYS.get(key) or RUN_KEYS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, [*MODEL_KEYS, *RUN_KEYS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GigaGPTError(f"unknown config key {key!r}{hint}")
        (model if key in MODEL_KEYS else run)[key] = _check_type(key, value, spec.type)
    return Config(GPTConfig(**model), RunConfig(**run), frozenset(model))


def _check_type(key, value, annotation):
    """Coerce YAML/CLI values to the field's type, or say clearly what is wrong."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if optional:
        if value is None:
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML reads "6e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is list and isinstance(value, str):
        return [value]
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise GigaGPTError(f"config key {key!r} must be {annotation.__name__}, got {value!r}")
    return value


def parse_overrides(args) -> dict:
    """['--width', '128', '--compile', 'true'] -> {'width': 128, 'compile': True} (values parsed as YAML)."""
    overrides, i = {}, 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--") or len(key) < 3:
            raise GigaGPTError(f"expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(args):
            raw, i = args[i + 1], i + 2
        else:
            raise GigaGPTError(f"--{key} needs a value")
        overrides[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else None
    return overrides


def fit_model_config(cfg, meta):
    """The model this run trains. vocab_size follows the dataset's meta.json and max_position_embeddings the
    sequence length, unless the config pins them or the checkpoint to resume from fixes them; then they are
    checked against the data."""
    model, run = cfg.model, cfg.run
    fixed = checkpoint.model_config_of(run.checkpoint_path) if run.checkpoint_path else {}
    needed = {"vocab_size": (meta["vocab_size"], f"dataset {run.dataset} has {meta['vocab_size']:,} tokens"),
              "max_position_embeddings": (run.sequence_length, f"sequence_length is {run.sequence_length}")}
    for key, (need, why) in needed.items():
        if key not in fixed and key not in cfg.pinned:
            model = replace(model, **{key: need})
            continue
        have, source = (fixed[key], "the checkpoint") if key in fixed else (getattr(model, key), "the config")
        if have < need:
            fix = (f"set {key} to at least {need}, or leave it out of the config to follow the data"
                   if key not in fixed else "train on data prepared with the checkpoint's tokenizer"
                   if key == "vocab_size" else f"use a sequence_length of at most {have}")
            raise GigaGPTError(f"{why}, but {source} fixes {key}={have}: {fix}")
        model = replace(model, **{key: have})
    return model


def planned_model_config(cfg):
    """fit_model_config before training (gigagpt info, bench): from the dataset where it is prepared; else
    positions follow sequence_length and vocab_size keeps its value (GPT-2's, unless the config pins one)."""
    try:
        return fit_model_config(cfg, data.load_meta(cfg.run.dataset)), True
    except GigaGPTError:
        if "max_position_embeddings" in cfg.pinned:
            return cfg.model, False
        return replace(cfg.model, max_position_embeddings=cfg.run.sequence_length), False
