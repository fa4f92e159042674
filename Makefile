# autopilot: `make demo` and `make test` work on a fresh clone with only Python 3.11.
# `make help` lists the targets.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := False

.PHONY: help install browser demo schema test test-ui test-scale test-reliability test-install constraints part-sizes lint typecheck pytest bench docker-check up down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv (if needed) and install the package (every part: .[all]) with its dev tools

browser: ## install the Debian tools the tests drive: Chromium, strace (root; a no-op when present)
	bash scripts/ensure_debian_tools.sh

demo: $(STAMP) ## the Adult model through Airflow's scheduler: train, gate, serve, monitor, retrain (services stopped after)
	$(BIN)/autopilot demo

schema: $(STAMP) ## regenerate the shipped JSON schema of a model config (both copies; a test compares them)
	$(BIN)/autopilot config schema > schema/model-config.schema.json
	cp schema/model-config.schema.json src/autopilot/config/model-config.schema.json

test: lint typecheck pytest ## lint, type-check and run every test

lint: $(STAMP) ## ruff (with Airflow's AIR rules) and the layer contracts (import-linter, pyproject.toml)
	$(BIN)/ruff check src tests dags plugins bench scripts
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

# Two workers, one test file each at a time (module fixtures stay in one process): the suite
# waits on servers, schedulers and bake periods as much as it computes (measured: 18 min
# serial, 10 min with two workers on 2 cores). PYTEST_WORKERS=0 runs serially.
# --no-loadscope-reorder: keep the collection order (slowest files first, tests/conftest.py);
# xdist would otherwise start the files with the most tests first and leave the long
# one-test files (the scale-out run) for the end.
PYTEST_WORKERS ?= 2
# The scale-out run (Airflow on PostgreSQL + Celery with two workers, an MLflow server, the full
# training DAG: ~5 min of one worker) is `make test-scale`; `.ci/run` runs it after `make test`,
# which stays under 20 minutes on the 2-core machine.
SCALE_TEST := tests/integration/test_scale_out.py
# The images' real pip install steps (Airflow ~5 min, serving ~4 min) are `make docker-check`; CI does not run them.
IMAGE_TEST := tests/docker/test_image_install.py
# The reliability suite (tests/reliability/, one module per case of the fault plan: kill -9,
# outages behind a proxy, malicious payloads) is `make test-reliability`; `.ci/run` runs it after
# `make test`, which stays under 20 minutes.
RELIABILITY := tests/reliability
# The fresh-venv installs of one part each (`.[serving]` serves a registered version, `.[ci]`
# triggers a run on a live api-server) are `make test-install`; `.ci/run` runs it after
# `make test-scale`.
INSTALL_TESTS := tests/install
# The Airflow UI story (the full embedded stack, a training and a monitoring run through the scheduler,
# then headless Chromium: ~5 min of one worker) is `make test-ui`; `.ci/run` runs it after `make test`,
# which measured 17.6 min of pytest with it inside (2026-12-07): too close to its 20-minute budget.
UI_TEST := tests/e2e/test_airflow_ui.py
# In `make pytest` every `autopilot serve` (the e2e runs, the demo) runs one worker process: the
# pool's own tests (tests/unit/test_serving_pool.py, and r19, r20, r29 in `make test-reliability`,
# which keeps the default `auto`) set the count they test; elsewhere a second worker on a 2-core
# machine already running two test files only doubles each server's start-up.
pytest: $(STAMP) ## the test suite (unit, DAG, end-to-end, integration)
	@AUTOPILOT_SERVING_WORKERS=$${AUTOPILOT_SERVING_WORKERS:-1} $(BIN)/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) \
	  --ignore=$(SCALE_TEST) --ignore=$(IMAGE_TEST) --ignore=$(RELIABILITY) --ignore=$(INSTALL_TESTS) --ignore=$(UI_TEST) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$status

test-reliability: $(STAMP) ## the fault suite: crashes, outages, attacks, each checked against its invariant
	@$(BIN)/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder) \
	  $(RELIABILITY) $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$status

test-ui: $(STAMP) ## the Airflow UI story: real runs through the scheduler, checked in headless Chromium (~4 min)
	$(BIN)/pytest -p no:cacheprovider $(UI_TEST) $(PYTEST_ARGS)

test-scale: $(STAMP) ## the scale-out run: Airflow on PostgreSQL with the CeleryExecutor (Redis), two workers (~5 min)
	$(BIN)/pytest -p no:cacheprovider $(SCALE_TEST)

test-install: $(STAMP) ## each part in a fresh venv: [serving] serves a version, [ci] triggers a run, constraints resolve (~11 min)
	$(BIN)/pytest -p no:cacheprovider $(INSTALL_TESTS)

constraints: $(STAMP) ## rewrite constraints/constraints-3.11.txt from a fresh install of .[all] (~8 min)
	bash scripts/make_constraints.sh $(PY)

part-sizes: $(STAMP) ## install each part in a fresh venv and print its size against [all] (~25 min)
	$(BIN)/python scripts/part_sizes.py

bench: $(STAMP) ## benchmarks (long; not run by CI): quality, FLAML, TPE vs random, parse time, overhead
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all,dev,bench]'
	$(BIN)/python bench/run_all.py

docker-check: $(STAMP) ## run both images' pip install steps in fresh venvs (~10 min; not run by CI)
	$(BIN)/pytest -p no:cacheprovider -s $(IMAGE_TEST)

up: $(STAMP) ## start the Airflow UI (api-server, scheduler, dag-processor, triggerer) and MLflow UI; unpause the model DAGs
	$(BIN)/autopilot up

down: ## stop what `make up` started
	@test -x $(BIN)/autopilot && $(BIN)/autopilot down || true

clean: down ## remove the embedded state (.autopilot/) but keep .venv
	rm -rf .autopilot
