"""Checkpoints: written atomically, read without running code from the file, with one clear line on failure."""
import os
import pickle
import subprocess
import sys

import pytest
import torch

from gigagpt import GigaGPTError, checkpoint, load_config
from gigagpt.train import train

from conftest import REPO, tiny_overrides


class Payload:
    """What a malicious checkpoint carries: unpickling it runs a command (here: creating a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_file(path, marker, state=None):
    state = dict(state or {})
    state["step"] = Payload(marker)
    torch.save(state, path)  # a real torch checkpoint, with a payload inside
    return path


@pytest.fixture(scope="module")
def trained(char_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(load_config(None, **tiny_overrides(char_data, out, num_steps=4, checkpoint_steps=2)), progress=False)
    return out


def test_a_payload_never_runs_on_any_path_that_reads_a_checkpoint(trained, char_data, tmp_path):
    marker = tmp_path / "payload_ran"
    good = torch.load(trained / "checkpoint_4.pt", weights_only=True)
    bad = malicious_file(tmp_path / "checkpoint_4.pt", marker, good)
    with pytest.raises(pickle.UnpicklingError):  # the threat is real: torch refuses it by default too
        torch.load(bad)
    assert not marker.exists()

    with pytest.raises(GigaGPTError, match="was refused"):  # sampling (gigagpt sample, notebooks, gigagpt.hf)
        checkpoint.load_model(bad)
    with pytest.raises(GigaGPTError, match="was refused"):  # resuming
        train(load_config(None, **tiny_overrides(char_data, tmp_path / "resumed", num_steps=6,
                                                 checkpoint_path=str(bad))), progress=False)
    cli = subprocess.run([sys.executable, "-m", "gigagpt", "sample", "--checkpoint", str(bad)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1 and "was refused" in cli.stderr
    assert not marker.exists()


def test_distributed_checkpoint_with_a_payload_is_refused(trained, tmp_path):
    """The folder's .metadata is unpickled by torch.distributed.checkpoint without restrictions: it is checked
    first. Its trainer.pt is read like any checkpoint."""
    marker = tmp_path / "payload_ran"
    folder = tmp_path / "checkpoint_4"
    folder.mkdir()
    with open(folder / ".metadata", "wb") as f:
        pickle.dump(Payload(marker), f)
    torch.save({"step": 4}, folder / checkpoint.TRAINER_FILE)
    with pytest.raises(GigaGPTError, match=r"\.metadata was refused: posix.system is not allowed"):
        checkpoint.convert_distributed(folder, tmp_path / "out.pt")
    (folder / ".metadata").write_bytes(b"")
    malicious_file(folder / checkpoint.TRAINER_FILE, marker)
    with pytest.raises(GigaGPTError, match="refused"):
        checkpoint.model_config_of(folder)
    assert not marker.exists()


def test_damaged_and_wrong_files_say_what_they_are(trained, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((trained / "checkpoint_4.pt").read_bytes()[:1000])
    with pytest.raises(GigaGPTError, match="damaged or not a checkpoint") as error:
        checkpoint.load(damaged)
    assert error.value.__cause__ is not None  # the cause is kept for whoever debugs it
    with pytest.raises(GigaGPTError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")
    weights_only = checkpoint.save({"model": {}, "step": 4, "config": {}, "tokenizer": {}}, tmp_path / "weights.pt")
    with pytest.raises(GigaGPTError, match="not a resumable gigagpt checkpoint .it has no optimizer, scheduler"):
        checkpoint.load(weights_only, keys=("model", "optimizer", "scheduler", "step"))


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path):
    path = checkpoint.save({"step": 1}, tmp_path / "c.pt")
    with pytest.raises(RuntimeError):
        with checkpoint.atomic(path) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            raise RuntimeError("the machine died")
    assert checkpoint.load(path) == {"step": 1} and list(tmp_path.iterdir()) == [path]
    checkpoint.save({"step": 2}, path)
    assert checkpoint.load(path) == {"step": 2} and list(tmp_path.iterdir()) == [path]
