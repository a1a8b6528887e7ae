"""The pretrained character model that ships for notebook 03 (data/shakespeare_char_pretrained.pt, made by
scripts/make_pretrained.sh): small, weights only, loads safely, is notebook 03's default model, has learned
Shakespeare, and samples."""
import ast
import hashlib
import json

import numpy as np
import pytest
import torch

from gigagpt import checkpoint, data, shipped
from gigagpt.sample import sample

from conftest import REPO

PATH = REPO / shipped.PRETRAINED_PATH


def notebook_parameters():
    """Notebook 03's parameters cell (literals only), as a dict."""
    nb = json.loads((REPO / "solutions" / "03_training_on_a_cpu.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


def test_shipped_file_is_small_and_the_one_recorded():
    assert PATH.is_file(), f"{PATH} is missing: scripts/make_pretrained.sh makes it"
    assert PATH.stat().st_size < 5 * 2**20
    assert hashlib.sha256(PATH.read_bytes()).hexdigest() == shipped.PRETRAINED_SHA256, \
        "remade? put the sha256 scripts/make_pretrained.sh printed into gigagpt/shipped.py"


def test_weights_config_and_tokenizer_only():
    state = checkpoint.load(PATH)  # weights_only: nothing but tensors and plain values
    assert set(state) == {"model", "config", "tokenizer", "step"}  # no AdamW state, no RNG state
    with pytest.raises(Exception, match="resumable"):
        checkpoint.load(PATH, keys=("model", "optimizer"))


def test_it_is_notebook_03s_default_model():
    config = checkpoint.load(PATH)["config"]
    p = notebook_parameters()
    model, run = config["model"], config["run"]
    assert (model["width"], model["depth"], model["heads"], model["dropout"]) == \
        (p["width"], p["depth"], p["heads"], p["dropout"])
    assert model["max_position_embeddings"] == run["sequence_length"] == p["sequence_length"]
    assert (run["batch_size"], run["num_steps"], run["seed"]) == (p["batch_size"], p["num_steps"], p["seed"])
    assert checkpoint.load(PATH)["step"] == p["num_steps"]


def test_it_has_learned_shakespeare(tmp_path):
    model, encoding = checkpoint.load_model(PATH)
    meta = data.prepare(REPO / "data" / "tinyshakespeare.txt", tmp_path, tokenizer="char")
    assert checkpoint.load(PATH)["tokenizer"]["chars"] == meta["chars"]  # the same ids as a fresh `prepare`
    T = model.config.max_position_embeddings
    val = torch.from_numpy(np.array(data.load_tokens(tmp_path, "val")[:16 * T + 1], dtype=np.int64))
    with torch.no_grad():
        loss = float(model(val[:-1].view(16, T), val[1:].view(16, T)))
    assert loss < 2.0, f"validation loss {loss:.3f}: uniform guessing is ln 65 = {np.log(65):.2f}"


def test_it_samples():
    model, encoding = checkpoint.load_model(PATH)
    text = sample(model, encoding, "ROMEO:", max_new_tokens=100, seed=0)
    assert text.startswith("ROMEO:") and len(text) == 106
    assert text == sample(model, encoding, "ROMEO:", max_new_tokens=100, seed=0)
    assert "\n" in text[6:] and " " in text[6:]  # lines and words, not noise


def test_notebook_03_runs_on_it(tmp_path):
    """A learner whose laptop is too slow sets use_pretrained = True: the learners' notebook 03 then trains nothing
    and every later section works on the shipped model (smoke setting; about half a minute)."""
    import importlib.util

    pytest.importorskip("papermill", reason="papermill is not installed (pip install -e '.[dev]')")
    spec = importlib.util.spec_from_file_location("run_course", REPO / "scripts" / "run_course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    notebook = REPO / "notebooks" / "03_training_on_a_cpu.ipynb"
    executed = tmp_path / notebook.name
    parameters = {"smoke": True, "use_pretrained": True, "output_dir": str(tmp_path / "out")}
    ok, seconds, message, _ = course.run_notebook(notebook, executed, parameters, course.smoke_timeout(notebook),
                                                  env={"OMP_NUM_THREADS": "1"})
    assert ok, message
    text = json.dumps(json.loads(executed.read_text())["cells"])
    assert "use_pretrained = True: not training" in text and "shakespeare_char_pretrained.pt: 2000 steps" in text
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained
