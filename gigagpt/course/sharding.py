"""Notebook 05's look at FSDP2 sharding without GPUs: the real model, sharded as for N processes, in one."""
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from gigagpt.backends.fsdp import shard
from gigagpt.errors import GigaGPTError
from gigagpt.model import GPT


def shard_on_fake_ranks(model_config, world_size, rank=0):
    """GPT(model_config) on the meta device, sharded by FSDP2 exactly as for training over `world_size`
    processes, as seen by process `rank`: its parameters are DTensors whose .to_local() is that process's
    shard (shapes only, no memory). Simulated in this one process with torch's fake process group (its
    collectives do nothing), an internal testing API that may move between torch versions.
    """
    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore
    except ImportError as e:
        raise GigaGPTError(f"this torch has no fake process group to simulate {world_size} processes ({e})") from e
    if dist.is_initialized():
        raise GigaGPTError("a process group is already running in this process: simulate sharding in a fresh one")
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)
    try:
        with torch.device("meta"):
            model = GPT(model_config)
        shard(model, init_device_mesh("cpu", (world_size,)))
    finally:
        dist.destroy_process_group()
    return model
