"""Checkpoints: one layout, one atomic writer, and loaders that never run code from a file.

A checkpoint is a dict: model, optimizer and scheduler state, the step, the run's config and the tokenizer
(meta.json of the dataset), and the RNG state where the backend keeps one. The plain backend writes it to
one `checkpoint_STEP.pt`; FSDP writes a torch.distributed.checkpoint folder (`convert_distributed` joins it
into one file); Cerebras writes cstorch's `.mdl` plus a `.pt` of the weights.

Files are loaded with `torch.load(weights_only=True)`: tensors and plain Python values only. A file whose
pickle names anything else (code, in a malicious file) is refused before any of it runs, with one line.
"""
import contextlib
import os
import pickle
import shutil
from pathlib import Path

import torch

from gigagpt.errors import GigaGPTError


def layout(step, model_state, optimizer_state, scheduler_state, extra):
    """The checkpoint dict. `extra` is what the loop adds: {"config": ..., "tokenizer": ...}."""
    return {"model": model_state, "optimizer": optimizer_state, "scheduler": scheduler_state, "step": step,
            **extra}


# --- writing: to a temporary name, then one rename, so a crash never leaves half a checkpoint -----------

def temporary(path):
    path = Path(path)
    return path.with_name(f"{path.name}.tmp")


def commit(tmp, path):
    """Move a finished temporary file or folder into place: readers see the old one or the new, never half."""
    if Path(tmp).is_dir() and Path(path).exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic(path):
    """`with atomic(path) as tmp:` write tmp; on success it becomes `path`, on an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary(path)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path)


def save(state, path):
    with atomic(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


# --- reading --------------------------------------------------------------------------------------------

def load(path, keys=(), what="checkpoint"):
    """A file written by `save` (or torch.save of tensors and plain values) -> its dict, on the CPU.
    `keys`: entries it must have (a weights-only .pt cannot resume training, say)."""
    path = Path(path)
    if not path.is_file():
        raise GigaGPTError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise GigaGPTError(f"{path} was refused: it holds more than tensors and plain values (code, in a "
                           f"malicious file), so it was not loaded; use checkpoints you or gigagpt made") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise GigaGPTError(f"{what} {path} cannot be read ({type(e).__name__}: {e}); it is damaged or not a "
                           f"checkpoint") from e
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise GigaGPTError(f"{path} is not a {'resumable ' if 'optimizer' in keys else ''}gigagpt checkpoint "
                           f"(it has no {', '.join(missing)})")
    return state


def load_model(path, device="cpu"):
    """A checkpoint file -> (GPT in eval mode on `device`, its tokenizer): what `gigagpt sample` reads."""
    from gigagpt.hardware import resolve_device
    from gigagpt.model import GPT, GPTConfig
    from gigagpt.tokenizer import encoding_from_meta

    state = load(path, keys=("model", "config", "tokenizer"))
    with torch.device("meta"):
        model = GPT(GPTConfig(**state["config"]["model"]))
    model.load_state_dict(state["model"], assign=True)
    model.lm_head.weight = model.wte.weight  # assign=True replaced both: tie them again
    return model.to(resolve_device(device)).eval(), encoding_from_meta(state["tokenizer"])


def model_config_of(path):
    """The model config stored with a checkpoint (a .pt file, a distributed folder, or a Cerebras .mdl)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRAINER_FILE
    elif path.suffix == ".mdl":
        path = path.with_suffix(".pt")  # written beside every .mdl
    return load(path)["config"]["model"]


# --- distributed (FSDP) checkpoints: torch.distributed.checkpoint folders ------------------------------

TRAINER_FILE = "trainer.pt"  # step, schedule, RNG, config, tokenizer: written last, by rank 0
# The only names a folder's .metadata pickle may use: torch.distributed.checkpoint's own plain records and
# the few plain values they hold (sizes, dtypes, the layout, the path it was saved to).
_METADATA_MODULES = ("torch.distributed.checkpoint.", "torch.distributed._shard.")
_METADATA_NAMES = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
                   ("pathlib", "PosixPath"), ("pathlib", "WindowsPath")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith(_METADATA_MODULES) or (module, name) in _METADATA_NAMES \
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def check_distributed(path):
    """Refuse a folder that is incomplete, or whose metadata would run code when torch.distributed.checkpoint
    unpickles it (it does so without restrictions; checking it first, with an allow-list, keeps that safe)."""
    path = Path(path)
    if not (path / ".metadata").is_file() or not (path / TRAINER_FILE).is_file():
        raise GigaGPTError(f"{path} is not a complete distributed checkpoint (expected a checkpoint_STEP folder "
                           f"with .metadata and {TRAINER_FILE})")
    try:
        with open(path / ".metadata", "rb") as f:
            _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise GigaGPTError(f"{path / '.metadata'} was refused: {e} (code, in a malicious file)") from e


def _plain_bytes(planner_class):
    """A load planner that reads non-tensor entries (optimizer settings) as plain values only."""

    class PlainBytes(planner_class):
        def load_bytes(self, read_item, value):
            try:
                torch.load(value, weights_only=True)  # refuses anything but tensors and plain values
            except pickle.UnpicklingError as e:
                raise GigaGPTError(f"a distributed checkpoint entry was refused: {e}") from e
            value.seek(0)
            super().load_bytes(read_item, value)

    return PlainBytes


def load_distributed(path, state):
    """Fill `state` (model and optimizer state dicts of this process's shards) from a checkpoint folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    check_distributed(path)
    dcp.load(state, checkpoint_id=path, planner=_plain_bytes(DefaultLoadPlanner)())
    return load(Path(path) / TRAINER_FILE)


def optimizer_state_by_name(state, model, optimizer):
    """A one-process optimizer.state_dict() (parameters numbered in group order) -> keyed by parameter name."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def optimizer_state_by_number(state):
    """The inverse: parameter names -> numbers in group order, as a one-process optimizer.state_dict()."""
    number = {name: i for i, name in enumerate(n for g in state["param_groups"] for n in g["params"])}
    return {
        "state": {number[name]: s for name, s in state["state"].items()},
        "param_groups": [{**g, "params": [number[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def convert_distributed(checkpoint_dir, out_path):
    """A distributed checkpoint folder -> the single-file checkpoint of the plain backend (no GPUs needed).

    The result loads with load_model, converts with gigagpt.hf.to_hf, and resumes training on one device
    (`--checkpoint_path OUT.pt`) or sharded again. Needs the full model in CPU memory.
    """
    # torch's own dcp_to_torch_save, with the planner that refuses anything but plain values
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner, _load_state_dict

    checkpoint_dir = Path(checkpoint_dir)
    check_distributed(checkpoint_dir)
    state = {}  # filled with full tensors: the planner gathers every shard
    _load_state_dict(state, storage_reader=FileSystemReader(checkpoint_dir),
                     planner=_plain_bytes(_EmptyStateDictLoadPlanner)(), no_dist=True)
    trainer = load(checkpoint_dir / TRAINER_FILE)
    model = state["model"]
    model.setdefault("lm_head.weight", model["wte.weight"])  # tied: one tensor under both names
    single = layout(trainer["step"], model, optimizer_state_by_number(state["optimizer"]), trainer["scheduler"],
                    {"config": trainer["config"], "tokenizer": trainer["tokenizer"], "rng": trainer["rng"][0]["cpu"]})
    return save(single, out_path)
