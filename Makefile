# custseg — one command to set up and run the demo, one to run the tests.
# Everything runs from a virtual environment in .venv, built from pyproject.toml pinned by
# constraints.txt (the versions the test suite was run with).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_CUSTOMERS ?= 20000
BENCH_CUSTOMERS ?= 100000

.PHONY: setup demo test lint format bench clean lock help
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install custseg with pinned dependencies

demo: setup ## generate a sample bank, run the nightly pipeline, print a summary and a SQL query
	$(BIN)/custseg generate --customers $(DEMO_CUSTOMERS) --force
	$(BIN)/custseg run --as-of latest
	$(BIN)/custseg sql "select aum_tier, count(*) as customers, round(sum(aum_cny)/1e6, 1) as aum_million_cny from aum_tiers group by aum_tier order by min(aum_cny)"
	$(BIN)/custseg sql "select rfm_segment, count(*) as customers, round(avg(monetary_cny)) as avg_monetary_cny from rfm_scores group by all order by customers desc"

test: setup ## run the test suite
	$(BIN)/python -m pytest -q

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## generate + run at $(BENCH_CUSTOMERS) customers, print rows/s and peak memory
	$(BIN)/python tests/benchmarks/bench_pipeline.py --customers $(BENCH_CUSTOMERS)

lock: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf /tmp/custseg-lock && $(PYTHON) -m venv /tmp/custseg-lock
	/tmp/custseg-lock/bin/pip install --quiet '.[dev]'
	/tmp/custseg-lock/bin/pip freeze --exclude custseg > constraints.txt

clean: ## remove .venv and everything under data/ that the pipeline wrote
	rm -rf $(VENV) data/landing data/ground_truth data/staging data/warehouse data/tmp data/artifacts
