# Two commands do everything (see README): `make course` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# CEREBRAS=0 skips the (6 GB) Cerebras environment and notebook 04.
CEREBRAS ?= 1
# A room without internet (README): `make wheelhouse` downloads every wheel .venv needs into $(WHEELHOUSE)
# (WHEELHOUSE_CEREBRAS=1: .venv-cerebras's too, into $(WHEELHOUSE)/cerebras). Where that folder exists,
# setup and scripts/cerebras_env.sh install from it alone, with no network; elsewhere, from the package index.
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_CEREBRAS ?= 0
FROM_WHEELHOUSE := $(if $(wildcard $(WHEELHOUSE)/*.whl),--no-index --find-links "$(abspath $(WHEELHOUSE))")

.PHONY: all setup wheelhouse data train sample course lab test cerebras-env notebooks clean
all: course

setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@echo "setup: installing .venv from $(if $(FROM_WHEELHOUSE),$(abspath $(WHEELHOUSE)) (no network),the package index)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(FROM_WHEELHOUSE) --upgrade pip
	$(BIN)/python -m pip install -q $(FROM_WHEELHOUSE) "$(TORCH)"
	$(BIN)/python -m pip install -q $(FROM_WHEELHOUSE) -e ".[dev]"
	@# nbgrader only generates notebooks/ from solutions/: keep its menus out of the learners' JupyterLab
	-$(BIN)/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	-for e in formgrader validate_assignment assignment_list course_list; do \
		$(BIN)/jupyter server extension disable --sys-prefix nbgrader.server_extensions.$$e >/dev/null 2>&1; done
	touch $@

# Resolves torch and ".[dev]" (pyproject.toml: new dependencies come along by themselves) together, plus
# pip/setuptools/wheel so the venv upgrade and gigagpt's editable build need no network either. Wheels are for
# this machine's OS, CPU architecture and Python ($(PYTHON)). Run again, it downloads only what is missing.
wheelhouse:
	$(PYTHON) -m pip download -q --dest "$(WHEELHOUSE)" pip setuptools wheel "$(TORCH)" ".[dev]"
ifeq ($(WHEELHOUSE_CEREBRAS),1)
	bash scripts/cerebras_env.sh --download "$(abspath $(WHEELHOUSE))/cerebras"
endif
	@du -sh "$(WHEELHOUSE)"

cerebras-env:
ifeq ($(CEREBRAS),1)
	WHEELHOUSE="$(abspath $(WHEELHOUSE))" bash scripts/cerebras_env.sh
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

# The learners' notebooks/ from solutions/ (the only ones to edit): nbgrader's ClearSolutions.
notebooks: setup
	$(BIN)/python scripts/make_learner_notebooks.py

lab: setup
	OMP_WAIT_POLICY=PASSIVE $(BIN)/jupyter lab notebooks/

test: setup cerebras-env
	MPLBACKEND=Agg $(BIN)/python -m pytest

clean:
	rm -rf out data/shakespeare_char data/shakespeare
