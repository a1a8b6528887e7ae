import pytest

from gigagpt import GigaGPTError, load_config
from gigagpt.config import parse_overrides

from conftest import REPO


def test_load_shipped_config_with_overrides():
    cfg = load_config(REPO / "configs" / "111m.yaml", width=192, learning_rate=1e-3)
    assert cfg.model.width == 192 and cfg.model.depth == 10
    assert cfg.run.learning_rate == 1e-3 and cfg.run.batch_size == 120
    assert cfg.run.decay_steps == cfg.run.num_steps - cfg.run.warmup_steps


def test_no_placeholder_paths_in_configs():
    for path in (REPO / "configs").glob("*.yaml"):
        cfg = load_config(path)
        assert not cfg.run.dataset.startswith("/") and not cfg.run.out_dir.startswith("/"), path


def test_parse_overrides():
    assert parse_overrides(["--width", "128", "--compile", "true", "--learning_rate=6e-4", "--dataset", "a-b"]) == {
        "width": 128, "compile": True, "learning_rate": "6e-4", "dataset": "a-b"}
    assert load_config(None, learning_rate="6e-4").run.learning_rate == 6e-4
    with pytest.raises(GigaGPTError, match="needs a value"):
        parse_overrides(["--width"])


@pytest.mark.parametrize("overrides, message", [
    ({"widht": 3}, "unknown config key 'widht' .did you mean 'width'"),
    ({"learning_rat": 1.0}, "did you mean 'learning_rate'"),
    ({"depth": "ten"}, "'depth' must be int, got 'ten'"),
    ({"compile": 3}, "'compile' must be bool"),
    ({"width": 100, "heads": 3}, "heads .3. must divide width .100.: try heads=\\d+"),
    ({"backend": "tpu"}, "backend must be one of"),
    ({"batch_size": 10, "gradient_accumulation_steps": 3}, "divisible"),
])
def test_bad_values(overrides, message):
    with pytest.raises(GigaGPTError, match=message):
        load_config(None, **overrides)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(GigaGPTError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("width: 3\n  depth: [\n")
    with pytest.raises(GigaGPTError, match="not valid YAML at line"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(GigaGPTError, match="mapping"):
        load_config(listing)
