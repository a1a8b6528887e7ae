"""Our five model configs must keep Cerebras' gigaGPT values, key by key.

The values below are gigaGPT's, copied by hand from github.com/Cerebras/gigaGPT at commit
ebc1bbe9efa3bb4c07898c016ec3f88927ec0cab ("2.5 Updates", 2025-04-28): its configs/*.yaml, plus the defaults
of its model.GPTConfig and configuration.RunConfig for the keys a file leaves out (gigaGPT fills them the same way).
"""
import pytest

from gigagpt import load_config

from conftest import REPO

# gigaGPT's dataclass defaults (model.py GPTConfig, configuration.py RunConfig).
GIGAGPT_DEFAULTS = {
    "max_position_embeddings": 2048, "vocab_size": 50257, "depth": 12, "heads": 12, "width": 768,
    "dropout": 0.0, "bias": True, "init_std": 0.02,
    "out_dir": "out", "dataset": "openwebtext", "batch_size": 120, "sequence_length": 2048, "num_steps": 10000,
    "checkpoint_steps": 1000, "learning_rate": 6e-4, "warmup_steps": 1500, "decay_steps": None,
    "weight_decay": 0.1, "max_gradient_norm": 1.0, "adam_epsilon": 1e-8, "backend": "CSX", "seed": 0,
    "execute_crd_memory_gi": 32, "compile_crd_memory_gi": 50,
}
# Keys common to all five gigaGPT files except where a config overrides them below.
_PATHS = {"out_dir": "model_dir", "dataset": "/path/to/openwebtext", "backend": "CSX",
          "mount_dirs": ["/path/to/code/location", "/path/to/data/location"],
          "python_paths": ["/path/to/code/location"]}

# gigaGPT's configs/<name>.yaml, every key it sets.
GIGAGPT_FILES = {
    "111m": {"width": 768, "depth": 10, "max_position_embeddings": 2048, "heads": 12, **_PATHS,
             "batch_size": 120, "sequence_length": 2048, "num_steps": 9037, "checkpoint_steps": 1000,
             "learning_rate": 6.0e-4, "warmup_steps": 1525},
    "1p3b": {"width": 2048, "depth": 24, "max_position_embeddings": 2048, "heads": 16, "init_std": 0.01, **_PATHS,
             "batch_size": 528, "sequence_length": 2048, "num_steps": 24334, "checkpoint_steps": 2000,
             "learning_rate": 2.0e-4, "warmup_steps": 346},
    "13b": {"width": 5120, "depth": 40, "max_position_embeddings": 2048, "heads": 40, "init_std": 0.014, **_PATHS,
            "batch_size": 1080, "sequence_length": 2048, "num_steps": 116223, "checkpoint_steps": 1000,
            "learning_rate": 1.2e-4, "warmup_steps": 581, "adam_epsilon": 1.0e-9},
    "70b": {"width": 8192, "depth": 80, "max_position_embeddings": 2048, "heads": 64, "init_std": 0.01, **_PATHS,
            "batch_size": 1472, "sequence_length": 2048, "num_steps": 663425, "checkpoint_steps": 1000,
            "learning_rate": 1.0e-4, "warmup_steps": 3317, "adam_epsilon": 1.0e-9},
    "175b": {"width": 12288, "depth": 96, "max_position_embeddings": 2048, "heads": 96, "init_std": 0.005, **_PATHS,
             "batch_size": 1472, "sequence_length": 2048, "num_steps": 663425, "checkpoint_steps": 1000,
             "learning_rate": 5.0e-6, "warmup_steps": 3317, "adam_epsilon": 1.0e-10, "execute_crd_memory_gi": 100},
}

# gigaGPT key -> (our section, our key). gigaGPT and gigagpt use the same names; the map makes that a checked fact.
MODEL_KEYS = ["width", "depth", "heads", "vocab_size", "max_position_embeddings", "dropout", "bias", "init_std"]
RUN_KEYS = ["batch_size", "sequence_length", "num_steps", "checkpoint_steps", "learning_rate", "warmup_steps",
            "decay_steps", "weight_decay", "max_gradient_norm", "adam_epsilon", "seed",
            "execute_crd_memory_gi", "compile_crd_memory_gi"]
NAME_MAP = {**{k: ("model", k) for k in MODEL_KEYS}, **{k: ("run", k) for k in RUN_KEYS}}
# Where we differ on purpose (each config says so in a comment): local relative paths instead of gigaGPT's
# placeholders, and plain PyTorch as the default backend (CSX is --backend CSX).
NOT_COMPARED = {"out_dir", "dataset", "backend", "mount_dirs", "python_paths"}


def gigagpt_values(name):
    values = {**GIGAGPT_DEFAULTS, **GIGAGPT_FILES[name]}
    if values["decay_steps"] is None:  # gigaGPT's RunConfig.__post_init__
        values["decay_steps"] = max(values["num_steps"] - values["warmup_steps"], 1)
    return values


def test_every_gigagpt_key_is_compared_or_knowingly_skipped():
    for name in GIGAGPT_FILES:
        assert set(gigagpt_values(name)) == set(NAME_MAP) | NOT_COMPARED, name


@pytest.mark.parametrize("name", sorted(GIGAGPT_FILES))
def test_config_matches_gigagpt(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    ours = {"model": cfg.model, "run": cfg.run}
    expected = gigagpt_values(name)
    mismatches = {
        key: (getattr(ours[section], our_key), expected[key])
        for key, (section, our_key) in NAME_MAP.items()
        if getattr(ours[section], our_key) != expected[key]
    }
    assert not mismatches, f"{name}: key: (ours, gigaGPT's) {mismatches}"


@pytest.mark.parametrize("name", sorted(GIGAGPT_FILES))
def test_header_states_the_token_budget(name):
    run = load_config(REPO / "configs" / f"{name}.yaml").run
    tokens = run.num_steps * run.batch_size * run.sequence_length
    header = (REPO / "configs" / f"{name}.yaml").read_text().split("\n\n")[0]
    assert f"{tokens:,} tokens" in header, header
