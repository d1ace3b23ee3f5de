# custseg — one command to set up and run the demo, one to run the tests.
# Everything runs from a virtual environment in .venv, built from pyproject.toml pinned by
# constraints.txt (the versions the test suite was run with).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_CUSTOMERS ?= 20000
# the sample bank's backfill date (generate.end_on - 3 days): the demo runs it, then latest
DEMO_FIRST_AS_OF ?= 2026-10-31
# a past date whose 90-day horizon has passed: next-best-product lists are scored on it
DEMO_EVALUATE_AS_OF ?= 2026-07-31
DEMO_BACKTEST_FROM ?= 2026-06-30
# bank sizes benchmarked (make bench BENCH_SIZES="100000 1000000 5000000" for the full series)
BENCH_SIZES ?= 100000 1000000

.PHONY: setup demo test lint format bench clean lock help
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install custseg with pinned dependencies

demo: setup ## generate a sample bank, run two nights, query, evaluate, backtest, write the report
	$(BIN)/custseg generate --customers $(DEMO_CUSTOMERS) --force
	$(BIN)/custseg run --as-of $(DEMO_FIRST_AS_OF)
	$(BIN)/custseg run --as-of latest
	$(BIN)/custseg sql "select segment_value as service_tier, customers, round(share_of_customers, 3) as share, round(aum_total_cny / 1e6, 1) as aum_million_cny, round(mean_txn_count_90d, 1) as txn_90d from segment_summaries where dimension = 'service_tier' order by aum_mean_cny"
	$(BIN)/custseg sql "select segment_code, count(*) as customers, any_value(coverage_model) as coverage_model from segments group by all order by customers desc limit 8"
	$(BIN)/custseg sql "select dimension, from_value, to_value, customers from segment_migrations where is_change order by customers desc limit 8"
	$(BIN)/custseg sql "select feature_group, round(coverage_share, 3) as coverage, is_below_minimum from feature_coverage"
	$(BIN)/custseg sql "select customer_id, rank, product_id, round(score, 3) as score, reason_text from next_best_products where customer_id in (select customer_id from next_best_products where list_contains(sources, 'signals') limit 2) order by all"
	$(BIN)/custseg evaluate nbp --as-of $(DEMO_EVALUATE_AS_OF)
	$(BIN)/custseg backtest --from $(DEMO_BACKTEST_FROM) --to $(DEMO_EVALUATE_AS_OF) --step 1M
	$(BIN)/custseg report --as-of latest

test: setup ## run the test suite
	$(BIN)/python -m pytest -q

lint: setup ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup ## per size in $(BENCH_SIZES): generate, initial and nightly run, 2 GiB re-run; time, rows/s, peak memory
	$(BIN)/python tests/benchmarks/bench_pipeline.py --customers $(BENCH_SIZES) --memory-check

lock: ## re-pin constraints.txt from a fresh resolve of pyproject.toml
	rm -rf /tmp/custseg-lock && $(PYTHON) -m venv /tmp/custseg-lock
	/tmp/custseg-lock/bin/pip install --quiet '.[dev]'
	/tmp/custseg-lock/bin/pip freeze --exclude custseg > constraints.txt

clean: ## remove .venv and everything under data/ that the pipeline wrote
	rm -rf $(VENV) data/landing data/ground_truth data/staging data/warehouse data/tmp data/artifacts
