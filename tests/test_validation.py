"""The publish gate: Great Expectations on DuckDB checks every output before it is visible.
Broken tables (a duplicate key, an unknown tier, a probability of 1.5) fail with the
validation exit code, name the table, expectation and offending values, and publish nothing."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shutil

import duckdb
import pytest

from pipeline.errors import EXIT_VALIDATION, ValidationFailed
from pipeline.expectations import between, in_set, key_checks, unique, unique_beyond
from pipeline.gx_gate import share_of_memory_limit, validate
from pipeline.registry import STAGES, STAGES_BY_NAME
from pipeline.runner import run_stages, suite_for
from tests.conftest import quiet


def rewrite(path, sql: str) -> None:
    """Replace a Parquet file by the result of `sql` (which may read the file itself)."""
    temporary = path.with_name(path.name + ".rewrite")
    with duckdb.connect() as con:  # not the module's default one, which other tests use
        con.sql(sql).to_parquet(str(temporary))
    temporary.replace(path)


def parquet(tmp_path, name: str, sql: str):
    path = tmp_path / f"{name}.parquet"
    duckdb.sql(sql).to_parquet(str(path))
    return path


def test_each_broken_table_fails_its_expectation_with_examples(tmp_path):
    tables = {
        "tiers": parquet(
            tmp_path,
            "tiers",
            """
            select * from (values ('C1', 'mass'), ('C1', 'affluent'), ('C2', 'gold'),
                                  ('C3', NULL)) t(customer_id, aum_tier)""",
        ),
        "scores": parquet(
            tmp_path,
            "scores",
            """
            select * from (values ('C1', 0.2), ('C2', 1.5), ('C3', 1.0)) t(customer_id, p)""",
        ),
    }
    suites = {
        "tiers": [*key_checks(("customer_id",)), in_set("aum_tier", ["mass", "affluent"])],
        "scores": [
            *key_checks(("customer_id",)),
            between("p", 0, 1),
            between("p", 0, 0.9, severity="warning"),
        ],
    }
    results, pages = validate(tables, suites, tmp_path / "work")
    assert set(pages) == {"tiers", "scores"}  # GX's Data Docs page per table
    outcome = {(r["table"], r["expectation"], r["severity"]): r for r in results}
    # keys are checked with our own query (gx_gate.repeated_keys_query), which spills to disk
    duplicate = outcome[("tiers", "unexpected_rows_expectation", "critical")]
    assert not duplicate["success"] and duplicate["examples"] == ["C1"]
    assert duplicate["observed_value"] == 1  # one key repeats
    unknown = outcome[("tiers", "expect_column_values_to_be_in_set", "critical")]
    assert not unknown["success"] and unknown["examples"] == ["gold"]  # null is not "unknown"
    probability = outcome[("scores", "expect_column_values_to_be_between", "critical")]
    assert not probability["success"] and probability["examples"] == [1.5]
    warning = outcome[("scores", "expect_column_values_to_be_between", "warning")]
    assert not warning["success"] and warning["unexpected_count"] == 2
    assert outcome[("scores", "unexpected_rows_expectation", "critical")]["success"]
    assert all(r["error"] is None for r in results)  # every expectation ran on DuckDB


def test_every_stage_declares_a_suite_that_covers_its_key():
    from pipeline.config import load_config
    from tests.conftest import DEFAULT_CONFIG

    config = load_config(DEFAULT_CONFIG, environ={})
    for stage in STAGES[1:]:
        checks = suite_for(config, stage, stage.output)
        assert checks[0].kind == "unique" and checks[0].columns == stage.key, stage.name
        if stage.name not in (
            "segment_migrations",
            "segment_summaries",
            "product_rules",
            "clusters",
        ):
            assert len(checks) > len(stage.key) + 1, f"{stage.name} declares no expectation"


def test_a_failed_expectation_publishes_nothing_and_exits_4(small_bank):
    config, _, _ = small_bank

    def digests():
        return {
            p: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(config.paths.warehouse.glob("*/as_of=*/*.parquet"))
        }

    before = digests()
    original = STAGES_BY_NAME["churn_scores"]

    def overconfident(con, **inputs):
        produced = original.transform(con, **inputs)
        scores = produced["churn_scores"]
        produced["churn_scores"] = scores.project(
            ", ".join(f"1.5 as {c}" if c == "churn_probability" else c for c in scores.columns)
        )
        return produced

    import inspect

    overconfident.__signature__ = inspect.signature(original.transform)
    stages = [
        STAGES_BY_NAME["customer_features"],
        dataclasses.replace(original, transform=overconfident),
    ]
    with pytest.raises(ValidationFailed) as caught:
        run_stages(config, config.generate.end_on, stages, quiet())
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_VALIDATION
    assert "churn_scores: churn_probability between 0 and 1 failed" in message
    assert "[1.5" in message and "nothing published" in message
    assert digests() == before  # yesterday's tables are still what readers see
    assert not list(config.paths.warehouse.glob("*/as_of=*/*.tmp-*"))
    reports = sorted((config.paths.warehouse / "validations").glob("*.json"))
    assert reports  # the failing run's results are kept for the post-mortem
    failing = json.loads(reports[-1].read_text())["run_id"]
    run_page = config.paths.warehouse / "data_docs" / "runs" / failing / "index.html"
    assert "failed" in run_page.read_text() and "churn_probability" in run_page.read_text()


def test_validate_command_checks_published_tables_and_exits_4(tmp_path, published_copy):

    from pipeline.warehouse import partition_path
    from tests.test_cli import _config_file, custseg

    bank, config = published_copy
    config_file = _config_file(tmp_path, config)
    day = str(bank.generate.end_on)
    passed = custseg("validate", "--as-of", day, config=config_file)
    assert passed.returncode == 0, passed.stderr
    assert re.search(r"all \d+ expectations on \d+ tables passed", passed.stderr + passed.stdout)
    tiers = partition_path(config.paths.warehouse, "aum_tiers", bank.generate.end_on)
    rewrite(
        tiers,
        f"select * replace (case when customer_id = (select min(customer_id) from "
        f"read_parquet('{tiers}')) then 'gold' else aum_tier end as aum_tier) "
        f"from read_parquet('{tiers}')",
    )
    failed = custseg("validate", "--as-of", day, config=config_file)
    assert failed.returncode == EXIT_VALIDATION
    assert "aum_tiers: aum_tier in ['mass', 'affluent', 'hnw'] failed (1 rows, e.g. ['gold'])" in (
        failed.stderr + failed.stdout
    )


def test_a_missing_customer_or_a_stale_date_fails_the_suite(tmp_path, published_copy):

    from pipeline.runner import validate_published
    from pipeline.warehouse import partition_path

    bank, config = published_copy
    day = bank.generate.end_on
    segments = partition_path(config.paths.warehouse, "segments", day)
    rewrite(segments, f"select * from read_parquet('{segments}') order by customer_id offset 1")
    rules = partition_path(config.paths.warehouse, "product_rules", day)
    rewrite(rules, f"select * replace (as_of - 1 as as_of) from read_parquet('{rules}')")
    customers = bank.generate.customers
    with pytest.raises(ValidationFailed) as caught:
        validate_published(config, day, quiet())
    message = str(caught.value)
    assert f"segments: table between {customers} and {customers} failed (observed " in message
    assert f"product_rules: as_of in ['{day}'] failed" in message


def test_a_corrupted_staged_input_fails_its_contract_suite(tmp_path, published_copy):
    import shutil

    from pipeline.runner import validate_published

    bank, config = published_copy
    config = config.model_copy(
        update={"paths": config.paths.model_copy(update={"staging": tmp_path / "staging"})}
    )
    shutil.copytree(bank.paths.staging, config.paths.staging)
    partition = sorted((config.paths.staging / "stg_transactions").glob("*/data.parquet"))[-1]
    rewrite(
        partition,
        f"select * replace (case when transaction_id = (select min(transaction_id) from "
        f"read_parquet('{partition}')) then 'sideways' else direction end as direction) "
        f"from read_parquet('{partition}', hive_partitioning = false)",
    )
    with pytest.raises(ValidationFailed) as caught:
        validate_published(config, bank.generate.end_on, quiet())
    assert (
        "stg_transactions: direction in ['credit', 'debit'] failed (1 rows, e.g. ['sideways'])"
        in (str(caught.value))
    )


def test_shares_that_moved_more_than_the_band_are_a_warning(tmp_path):
    from pipeline.expectations import share_stable

    tiers = parquet(
        tmp_path,
        "tiers",
        """
        select 'C' || i as customer_id, case when i % 10 = 0 then 'affluent' else 'mass' end
               as aum_tier from range(1000) t(i)""",
    )
    previous = {"mass": 0.95, "affluent": 0.05}
    results, _ = validate(
        {"tiers": tiers},
        {
            "tiers": [
                share_stable("aum_tier", previous, 0.02),
                share_stable("aum_tier", previous, 0.06),
            ]
        },
        tmp_path / "work",
    )
    by_band = {r["check"]["max_value"]: r for r in results}
    assert not by_band[0.02]["success"] and by_band[0.02]["observed_value"] == 2
    assert by_band[0.02]["severity"] == "warning"  # reported, not a stop
    assert by_band[0.06]["success"]


def _local_references(page: str) -> list[str]:
    return [
        ref
        for ref in re.findall(r"""(?:src|href)="([^"#][^"]*)\"""", page)
        if not ref.startswith(("http:", "https:", "mailto:"))
    ]


def test_data_docs_render_offline_with_every_asset_on_disk(small_bank):
    """Each run's Data Docs: an index, a page per table, and nothing loaded from the network;
    every stylesheet, script and image a page names exists under the warehouse."""
    from pipeline.data_docs import remote_resources

    config, _, manifest = small_bank
    site = config.paths.warehouse / "data_docs"
    run = site / "runs" / manifest.run_id
    assert manifest.run_id in (site / "index.html").read_text()
    pages = sorted(run.glob("*.html"))
    tables = {p.stem for p in pages} - {"index"}
    assert {"segments", "churn_scores", "stg_transactions", "model_fits__clusters"} <= tables
    for page in pages:
        text = page.read_text()
        assert remote_resources(text) == [], page.name
        for ref in _local_references(text):
            target = (page.parent / ref.split("?")[0]).resolve()
            assert target.exists(), f"{page.name} names {ref}, which is missing"
    gx_page = (run / "segments.html").read_text()
    assert "vendor/vega.min.js" in gx_page and "vendor/bootstrap.min.css" in gx_page
    assert "Succeeded" in gx_page


def test_gx_pages_name_cdns_that_the_offline_rewrite_replaces():
    """The rewrite keeps up with GX's templates: a raw page names CDNs, the rewritten none."""
    from pipeline.data_docs import offline_page, remote_resources

    raw = """<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
    <script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-x" crossorigin="anonymous"></script>
    <img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1"/>
    <link rel="shortcut icon" href="../../../static/images/favicon.ico"/>
    <a href="https://greatexpectations.io">a link is not a resource</a>"""  # noqa: E501
    assert len(remote_resources(raw)) == 3
    page = offline_page(raw, "../../")
    assert remote_resources(page) == []
    assert '"../../static/vendor/bootstrap.min.js"' in page and "integrity" not in page
    assert '"../../static/images/logo-long.png"' in page
    assert '"../../static/images/favicon.ico"' in page


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_data_docs_scripts_run_in_headless_chromium_with_no_network(small_bank):
    """The page's own scripts (jQuery, Bootstrap Table) load from the vendored copies: Bootstrap
    Table wraps each table in div.bootstrap-table only when its script ran."""
    import subprocess

    config, _, manifest = small_bank
    page = config.paths.warehouse / "data_docs" / "runs" / manifest.run_id / "aum_tiers.html"
    assert 'class="bootstrap-table' not in page.read_text()
    dom = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={config.paths.temp / 'chromium'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'class="bootstrap-table bootstrap4"' in dom


def test_the_gate_checks_each_staged_partition_once(small_bank, tmp_path):
    """After a passing gate every staged partition is marked; a rewritten partition is checked
    again, its key against the partitions checked before (a key repeated from an earlier
    extract fails), and a changed suite checks everything again."""
    from pipeline.expectations import source_checks
    from pipeline.ingest import staged_files_sql
    from pipeline.input_checks import earlier_table, mark_checked, plan
    from pipeline.runner import _input_checks
    from transforms.sources import SOURCES

    bank, _, _ = small_bank
    staging = tmp_path / "staging"
    shutil.copytree(bank.paths.staging, staging)
    config = bank.model_copy(update={"paths": bank.paths.model_copy(update={"staging": staging})})
    as_of = bank.generate.end_on
    assert _input_checks(config, as_of, None, incremental=True) == []  # the bank's run passed

    files = sorted((staging / "stg_transactions").glob("extract_on=*/data.parquet"))
    assert len(files) > 1
    latest = files[-1]
    rewrite(latest, f"from '{latest}' union all (from '{files[0]}' limit 1)")
    planned = _input_checks(config, as_of, None, incremental=True)
    assert [(i.table, i.new_files, i.earlier_files) for i in planned] == [
        ("stg_transactions", [latest], files[:-1])
    ]
    item = planned[0]
    assert "unique_beyond" in [c.kind for c in item.checks]
    assert "unique" not in [c.kind for c in item.checks]
    tables = {item.table: item.sql, earlier_table(item.table): staged_files_sql(files[:-1])}
    results, _ = validate(tables, {item.table: item.checks}, tmp_path / "work")
    failed = [r for r in results if not r["success"]]
    assert [(r["check"]["kind"], r["observed_value"]) for r in failed] == [("unique_beyond", 1)]
    assert len(results) == len(item.checks)

    # the full check (custseg validate) sees the repeated key in the whole history too
    full = next(i for i in _input_checks(config, as_of, None, False) if i.source == "transactions")
    assert full.new_files == [] and "unique" in [c.kind for c in full.checks]
    results, _ = validate({full.table: full.sql}, {full.table: full.checks}, tmp_path / "full")
    assert [r["check"]["kind"] for r in results if not r["success"]] == ["unique"]

    mark_checked(planned)  # as the runner does once the gate passed
    assert _input_checks(config, as_of, None, incremental=True) == []
    suites = {name: (SOURCES[name].table, source_checks(SOURCES[name], set())) for name in SOURCES}
    suites["transactions"] = (suites["transactions"][0], suites["transactions"][1][:-1])
    changed = plan(staging, as_of, suites, incremental=True)  # pii columns differ from config
    transactions = next(i for i in changed if i.source == "transactions")
    assert transactions.new_files == files and transactions.earlier_files == []


def test_the_validation_children_share_the_engine_memory_limit(tmp_path):
    """Each of the two GX children runs its DuckDB under half of engine.memory_limit (read back
    by a view the child evaluates); without a limit each would take 80% of the machine."""
    probe = "select current_setting('memory_limit') as memory_limit"
    checks = [in_set("memory_limit", ["1.0 GiB"])]
    results, _ = validate(
        {"first": probe, "second": probe},
        {"first": checks, "second": checks},
        tmp_path / "work",
        workers=2,
        memory_limit="2GiB",
    )
    assert [(r["table"], r["success"]) for r in results] == [("first", True), ("second", True)]
    assert share_of_memory_limit("8GB", 2) == "3814MiB"  # 4e9 bytes
    assert share_of_memory_limit("64MB", 4) == "64MiB"  # never below 64 MiB
    assert share_of_memory_limit("80%", 2) == "80%"  # a form it does not know: passed on


def test_a_check_whose_query_fails_is_reported_as_not_checked_not_as_failed(tmp_path):
    """When DuckDB cannot run a check's query (out of memory at 5M rows under 2 GB, here an
    error the view raises), the result carries DuckDB's message, so the gate says the check
    could not run; before, it read as a key found not unique ("observed None")."""
    broken = "select i as customer_id, error('the disk went away') as tier from range(3) t(i)"
    results, _ = validate(
        {"broken": broken}, {"broken": [in_set("tier", ["mass"])]}, tmp_path / "work"
    )
    [result] = results
    assert not result["success"]
    assert result["error"].endswith("Invalid Input Error: the disk went away")  # no SQL


def test_repeated_keys_are_found_exactly_for_compound_keys_and_across_partitions(tmp_path):
    """Keys are checked by their hashes first, then exactly: two distinct ids whose DuckDB
    hashes collide (found among 100M generated transaction ids) are not a repeated key; a
    repeated compound key is, and so is a key already in the partitions checked before."""
    colliding = ("TC0027576521479323", "TC0027596521479923")
    assert duckdb.execute("select hash(?) = hash(?)", colliding).fetchone() == (True,)
    night = f"select * from (values ('{colliding[0]}'), ('{colliding[1]}'), ('T9')) t(id)"
    tables = {
        "night": night,
        "night_again": night,
        "balances": "select * from (values ('C1', 'P1', 1), ('C1', 'P1', 1), ('C1', 'P2', 1),"
        " ('C2', 'P1', 1)) t(customer_id, product_id, day)",
        "earlier": "select 'T9' as id union all select 'T8'",
    }
    suites = {
        "night": [unique("id")],
        "night_again": [unique_beyond(("id",), "earlier")],
        "balances": [unique("customer_id", "product_id", "day")],
    }
    results, _ = validate(tables, suites, tmp_path / "work")
    outcome = {r["table"]: r for r in results}
    assert outcome["night"]["success"]  # a hash collision is not a repeat
    assert not outcome["night_again"]["success"]
    assert outcome["night_again"]["examples"] == ["T9"]  # already checked before
    assert not outcome["balances"]["success"]
    assert outcome["balances"]["examples"] == [["C1", "P1", 1]]


def _staging_with_a_sideways_transaction(tmp_path, published_copy):
    """The copy's config reading a copy of staging whose latest transactions partition, not yet
    checked by any gate (rewritten), holds one row with direction 'sideways'."""
    bank, config = published_copy
    staging = tmp_path / "staging"
    shutil.copytree(bank.paths.staging, staging)
    config = config.model_copy(
        update={"paths": config.paths.model_copy(update={"staging": staging})}
    )
    partition = sorted((staging / "stg_transactions").glob("*/data.parquet"))[-1]
    rewrite(
        partition,
        f"select * replace (case when transaction_id = (select min(transaction_id) from "
        f"read_parquet('{partition}')) then 'sideways' else direction end as direction) "
        f"from read_parquet('{partition}', hive_partitioning = false)",
    )
    return bank, config


def test_the_staged_inputs_are_checked_beside_the_stages_and_fail_the_run(tmp_path, published_copy):
    """The night's staged partitions are checked in children started before the first stage;
    a failure there stops the run at the gate like any output's, and leaves nothing behind."""
    bank, config = _staging_with_a_sideways_transaction(tmp_path, published_copy)
    before = {p: p.read_bytes() for p in config.paths.warehouse.glob("*/as_of=*/*.parquet")}
    started = []
    original = STAGES_BY_NAME["rfm_scores"]

    @functools.wraps(original.transform)  # the runner passes inputs by its signature
    def watching(con, **inputs):  # the input checks run while the stages do
        started.extend(config.paths.temp.glob("validate-*-inputs/part*/spec.json"))
        return original.transform(con, **inputs)

    stages = [
        STAGES_BY_NAME["customer_features"],
        dataclasses.replace(original, transform=watching),
    ]
    with pytest.raises(ValidationFailed) as caught:
        run_stages(config, bank.generate.end_on, stages, quiet())
    assert started
    assert "stg_transactions: direction in ['credit', 'debit'] failed (1 rows" in str(caught.value)
    assert {p: p.read_bytes() for p in config.paths.warehouse.glob("*/as_of=*/*.parquet")} == before
    assert not list(config.paths.temp.glob("validate-*"))
    # the partition is not marked as checked: the next run checks it again
    from pipeline.runner import _input_checks

    assert [i.table for i in _input_checks(config, bank.generate.end_on, None, True)] == [
        "stg_transactions"
    ]


def test_a_failing_stage_stops_the_input_checks_running_beside_it(
    tmp_path, published_copy, monkeypatch
):
    import pipeline.runner

    bank, config = _staging_with_a_sideways_transaction(tmp_path, published_copy)
    original = STAGES_BY_NAME["customer_features"]
    checking = []

    def start_and_keep(*args, **kwargs):
        checking.append(real_start(*args, **kwargs))
        return checking[-1]

    real_start = pipeline.runner.start_validation
    monkeypatch.setattr(pipeline.runner, "start_validation", start_and_keep)

    @functools.wraps(original.transform)
    def failing(con, **inputs):
        raise RuntimeError("stage failed")

    with pytest.raises(RuntimeError, match="stage failed"):
        run_stages(
            config,
            bank.generate.end_on,
            [dataclasses.replace(original, transform=failing)],
            quiet(),
        )
    assert not list(config.paths.temp.glob("validate-*"))
    assert len(checking) == 1 and checking[0].children
    # killed, not waited for: a child that had finished would have written its results
    assert all(child.returncode is not None for _, child in checking[0].children)
    assert any(child.returncode < 0 for _, child in checking[0].children)
