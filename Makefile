# The two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ENV := . .services/env &&

.PHONY: run test lint unit integration docs dashboards bench soak services services-stop tools venv clean

run: venv services
	$(ENV) exec $(BIN)/ingest-exporter run

test: venv tools services lint
	$(ENV) $(BIN)/pytest tests/unit tests/integration
	@echo "make test: ok"

unit: venv
	$(BIN)/pytest tests/unit

integration: venv tools services
	$(ENV) $(BIN)/pytest tests/integration

lint: venv
	$(BIN)/ruff check exporter tests bench grafana deploy
	$(BIN)/ruff format --check exporter tests bench grafana deploy
	$(BIN)/mypy

# 30 minutes at a 1 s probe interval with a fault every 30 s; not part of `make test`.
soak: venv services
	$(ENV) $(BIN)/python -m bench.soak

docs: venv
	$(BIN)/python -m exporter.telemetry.catalog README.md
	$(BIN)/python -m exporter.drills docs/failover-drill-snapshot.schema.json

# Regenerate the committed Grafana dashboards and Prometheus rules (a test fails on drift).
dashboards: venv
	$(BIN)/python -m grafana.generate
	$(BIN)/python -m deploy.prometheus.generate

# Side by side with the Go exporters, and the fleet table: about four minutes,
# at most ten; not part of `make test`. BENCH_NOTE adds a line to the result file.
BENCH_NOTE ?=
bench: venv services
	bash scripts/bench-tools.sh
	$(ENV) $(BIN)/python -m bench.suite --note "$(BENCH_NOTE)"

venv: $(STAMP)

# Reinstall when the pins or the project metadata change.
$(STAMP): pyproject.toml constraints.txt
	bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	touch $@

# Prometheus (promtool), Alertmanager (amtool) and Chromium for the integration tests (Debian).
tools:
	bash scripts/tools.sh

services:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
