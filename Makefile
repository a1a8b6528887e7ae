# Two commands do everything (see README): `make course` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# CEREBRAS=0 skips the (6 GB) Cerebras environment and notebook 04.
CEREBRAS ?= 1

.PHONY: all setup data train sample course lab test cerebras-env clean
all: course

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

cerebras-env:
ifeq ($(CEREBRAS),1)
	bash scripts/cerebras_env.sh
endif

data: setup
	$(BIN)/gigagpt prepare data/tinyshakespeare.txt --tokenizer char --out data/shakespeare_char
	$(BIN)/gigagpt prepare data/tinyshakespeare.txt --tokenizer gpt2 --out data/shakespeare

# The command-line path of notebook 03: train the small character model, then sample from it.
train: data
	$(BIN)/gigagpt train configs/shakespeare_char.yaml
sample:
	$(BIN)/gigagpt sample --checkpoint out/shakespeare_char/checkpoint_1000.pt --prompt "ROMEO:" --seed 1

# The whole course, headless, at its default setting: executed notebooks + HTML in out/course/.
course: setup cerebras-env data
	OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg $(BIN)/python scripts/run_course.py --out out/course

lab: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/jupyter lab notebooks/

test: setup cerebras-env
	MPLBACKEND=Agg $(BIN)/python -m pytest

clean:
	rm -rf out data/shakespeare_char data/shakespeare
