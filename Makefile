# Entropice: `make demo` builds the environment and materialises the asset graph on the sample
# region; `make test` builds the environment with dev extras and runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.13 (stack.md): python3.13 on PATH, else pyenv's install, else PYTHON=... from the caller.
PYTHON ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo $$p; break; }; done)
UV_VERSION := 0.13.8
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export ENTROPICE_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# The instance settings copied into DAGSTER_HOME: SQLite for one person; a team shares
# PostgreSQL with DAGSTER_YAML=deploy/dagster-postgres.yaml (and DAGSTER_PG_* set, see README).
DAGSTER_YAML ?= dagster.yaml
PORT ?= 3000

.PHONY: help demo test ui dashboard lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	@test -n "$(PYTHON)" || { echo "error: Python 3.13 not found; install it (e.g. pyenv install 3.13) or run make PYTHON=/path/to/python3.13" >&2; exit 1; }
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# One environment for every target: the CPU build of XGBoost (`cpu` extra) and the dev tools, so
# that `make ui` after `make test` keeps what the tests need (a GPU machine: `uv sync --extra gpu
# --extra dev`).
.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra cpu --extra dev --python $(PYTHON)
	@touch $@

demo: .venv/.synced  ## build .venv, materialise the asset graph on the sample region, print a summary
	@mkdir -p $(DAGSTER_HOME) && cp $(DAGSTER_YAML) $(DAGSTER_HOME)/dagster.yaml
	.venv/bin/entropice demo --data-dir $(ENTROPICE_DATA_DIR)

test: .venv/.synced  ## build .venv with dev extras and run the tests (PYTEST_ARGS='-m "not slow"': the quick ones)
	.venv/bin/ruff check entropice_core entropice_dagster entropice_dashboard tests benchmarks
	.venv/bin/python -m pytest -q $(PYTEST_ARGS)

ui: .venv/.synced  ## open the Dagster UI on http://127.0.0.1:$(PORT)
	@mkdir -p $(DAGSTER_HOME) && cp $(DAGSTER_YAML) $(DAGSTER_HOME)/dagster.yaml
	@.venv/bin/python -m entropice_dagster.pools
	.venv/bin/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

# The dashboard's port: PORT=... on the command line or in the environment, else 8501 (the
# Dagster UI keeps 3000, so both can run side by side).
dashboard: PORT := $(if $(filter file,$(origin PORT)),8501,$(PORT))
dashboard: .venv/.synced  ## serve the dashboard (Streamlit) on http://127.0.0.1:$(PORT), PORT default 8501
	@echo "Entropice dashboard on http://127.0.0.1:$(PORT) (data: $(ENTROPICE_DATA_DIR))"
	.venv/bin/streamlit run entropice_dashboard/app.py --server.address 127.0.0.1 \
		--server.port $(PORT) --server.headless true --browser.gatherUsageStats false \
		--client.toolbarMode viewer

lint: .venv/.synced  ## ruff check, ruff format check and the type checker (mypy), as CI runs them
	.venv/bin/ruff check entropice_core entropice_dagster entropice_dashboard tests benchmarks
	.venv/bin/ruff format --check entropice_core entropice_dagster entropice_dashboard tests benchmarks
	.venv/bin/mypy

format: .venv/.synced  ## ruff format and fix
	.venv/bin/ruff format entropice_core entropice_dagster entropice_dashboard tests benchmarks
	.venv/bin/ruff check --fix entropice_core entropice_dagster entropice_dashboard tests benchmarks

bench: .venv/.synced  ## run every benchmark and print its table
	for b in benchmarks/*.py; do .venv/bin/python $$b || exit 1; done

clean:  ## remove the environment, outputs and the Dagster instance
	rm -rf .venv .tools $(ENTROPICE_DATA_DIR) $(DAGSTER_HOME)
