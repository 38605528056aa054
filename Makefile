# Two commands on a fresh clone: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= data/demo
CHECKPOINTS ?= checkpoints/demo
RESULTS ?= results/demo

.PHONY: install run test test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The longest real path that exists today: synthesise a data set, prepare it into shards, extract triplets from its
# reports (cached: a rerun extracts nothing), train the demo preset (resumes if interrupted; about 6 minutes on
# 2 cores), evaluate it on the held-out test split and register it in MLflow (./mlruns unless MLFLOW_TRACKING_URI).
run: $(STAMP)
	$(VENV)/bin/medklip data prepare --source "synthetic://2000?seed=0" --out $(DATA)
	$(VENV)/bin/medklip extract --data $(DATA) --cache .cache/extract
	$(VENV)/bin/medklip data inspect $(DATA)
	$(VENV)/bin/medklip train --data $(DATA) --config demo --save $(CHECKPOINTS)
	$(VENV)/bin/medklip evaluate --weights $(CHECKPOINTS)/model_best.safetensors --data $(DATA) --out $(RESULTS)
	$(VENV)/bin/medklip registry register --run-id $$(cat $(CHECKPOINTS)/mlflow_run_id)
	@echo "best model: $(CHECKPOINTS)/model_best.safetensors; metrics and plots: $(RESULTS)/"
	@echo "MLflow: $${MLFLOW_TRACKING_URI:-mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db, then http://127.0.0.1:5000}"

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(DATA) $(CHECKPOINTS) $(RESULTS) .cache .pytest_cache .ruff_cache
