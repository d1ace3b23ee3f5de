"""The whole pipeline on a small generated bank: reconciliation, reproducibility, atomicity."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline import warehouse
from pipeline.errors import EXIT_VALIDATION, UsageError, ValidationFailed
from pipeline.generate import generate_bank
from pipeline.registry import STAGES, STAGES_BY_NAME, TABLES
from pipeline.runner import run_stages
from pipeline.warehouse import open_catalog, partition_path
from tests.conftest import config_for, quiet, small_generate

NOT_REJECTS = {"rows_written", "duplicate_row", "optional_value_blanked"}


def _output_digests(config) -> dict[str, str]:
    return {
        str(p.relative_to(config.paths.warehouse)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(config.paths.warehouse.glob("*/as_of=*/*.parquet"))
    }


def test_every_injected_bad_row_is_rejected_or_counted_as_duplicate(small_bank):
    config, result, manifest = small_bank
    ingest = next(s for s in manifest.stages if s.stage == "ingest")
    extracts = {(e["source"], e["extract_on"]): e for e in ingest.detail["extracts"]}
    checked = 0
    for source, days in result.mess.items():
        for day, injected in days.items():
            staged = extracts[(source, day)]
            assert staged["rows_read"] == injected["rows_written"]
            assert staged["rows_duplicate"] == injected.get("duplicate_row", 0), (source, day)
            expected_rejects = sum(v for k, v in injected.items() if k not in NOT_REJECTS)
            assert staged["rows_rejected"] == expected_rejects, (source, day)
            checked += 1
    assert checked == len(extracts) and checked >= 6 * 4
    assert sum(e["rows_rejected"] for e in extracts.values()) > 0


def test_outputs_have_unique_keys_and_accepted_values(small_bank):
    config, _, _ = small_bank
    con = open_catalog(config.paths.warehouse)
    customers = config.generate.customers
    for stage in STAGES[1:]:
        for table, key_columns in ((stage.output, stage.key), *stage.extra_outputs):
            key = ", ".join(key_columns)
            total, distinct, null_keys = con.sql(
                f"select count(*), count(distinct ({key})), "
                f"count(*) filter (where {' or '.join(f'{k} is null' for k in key_columns)}) "
                f"from {table}"
            ).fetchall()[0]
            assert total == distinct and null_keys == 0, table
            assert total > 0 or table == "segment_migrations", table  # empty on a first run
            if key_columns == ("customer_id", "as_of"):
                assert customers * 0.9 <= total <= customers, table
    accepted = {
        ("aum_tiers", "aum_tier"): {t.code for t in config.aum_tiers.tiers},
        ("segments", "service_tier"): set(config.segments.service),
        ("rfm_scores", "rfm_segment"): {s.code for s in config.rfm_scores.segments},
        ("risk_profiles", "stated_risk_class"): {c.code for c in config.risk_profiles.classes},
        ("risk_profiles", "behavioural_risk_class"): {c.code for c in config.risk_profiles.classes},
        ("risk_profiles", "questionnaire_status"): {"valid", "expired", "missing"},
        ("lifecycle_stages", "lifecycle_stage"): {r.code for r in config.lifecycle_stages.rules},
        ("life_stages", "life_stage"): {r.code for r in config.life_stages.rules},
        ("relationship_depth", "relationship_depth"): {
            r.code for r in config.relationship_depth.rules
        },
    }
    for (table, column), codes in accepted.items():
        seen = {r[0] for r in con.sql(f"select distinct {column} from {table}").fetchall()}
        assert seen - {None} <= codes and len(seen - {None}) >= 2, (table, column, seen)
    assert con.sql("select min(recency_score), max(recency_score) from rfm_scores").fetchall() == [
        (1, 5)
    ]
    assert con.sql("select count(*) from aum_tiers where aum_cny < 0").fetchall() == [(0,)]
    shares = con.sql(
        "select min(coverage_share), max(coverage_share) from feature_coverage"
    ).fetchall()[0]
    assert 0 <= shares[0] <= shares[1] <= 1


def test_no_personal_data_in_any_output(small_bank):
    config, _, _ = small_bank
    for path in list(config.paths.warehouse.glob("**/*.parquet")) + list(
        config.paths.staging.glob("stg_*/**/*.parquet")
    ):
        columns = {
            r[0] for r in duckdb.sql(f"describe select * from read_parquet('{path}')").fetchall()
        }
        assert not columns & {"name", "phone", "national_id"}, path


def test_catalog_exposes_latest_history_rejects_and_manifests(small_bank):
    config, _, manifest = small_bank
    con = open_catalog(config.paths.warehouse)
    assert (
        con.sql("select max(as_of) from customer_features").fetchall()[0][0]
        == config.generate.end_on
    )
    assert con.sql("select count(*) > 0 from customer_features_history").fetchall() == [(True,)]
    assert con.sql("select count(*) > 0 from stg_rejects").fetchall() == [(True,)]
    stages = con.sql(
        "select stage, stage_status from run_manifests where run_id = $r order by stage",
        params={"r": manifest.run_id},
    ).fetchall()
    assert dict(stages) == {s.name: "ok" for s in STAGES}
    on_disk = json.loads(
        (config.paths.warehouse / "run_manifests" / f"{manifest.run_id}.json").read_text()
    )
    assert on_disk["config_hash"] == config.hash() and on_disk["status"] == "succeeded"


def test_a_second_run_gives_identical_outputs(small_bank):
    config, _, _ = small_bank
    before = _output_digests(config)
    model_stages = [s for s in STAGES if any(t == "model_fits" for t, _ in s.extra_outputs)]
    assert len(before) == len(TABLES) + len(model_stages)  # one model_fits file each
    run_stages(config, config.generate.end_on, list(STAGES), quiet(), reload=True)
    assert _output_digests(config) == before


def test_every_parquet_file_is_written_by_the_one_writer(small_bank, tmp_path):
    config, _, _ = small_bank
    files = sorted(config.paths.warehouse.glob("*/as_of=*/*.parquet")) + sorted(
        config.paths.staging.glob("**/data.parquet")
    )
    assert any("stg_" in str(f) for f in files) and any("segments" in str(f) for f in files)
    with duckdb.connect() as con:
        codecs = con.execute(
            "select distinct compression from parquet_metadata($files)",
            {"files": [str(f) for f in files]},
        ).fetchall()
        assert codecs == [("ZSTD",)]
        # a dictionary for a column of 3 values, none for one of 2,000 (DuckDB's default
        # writer makes one for both)
        sample = tmp_path / "sample.parquet"
        warehouse.write_parquet(
            con.sql("select i % 3 as few, i % 2000 as many from range(20000) t(i) order by i"),
            sample,
        )
        encodings = dict(
            con.execute(
                "select path_in_schema, string_agg(distinct encodings) "
                f"from parquet_metadata('{sample}') group by all"
            ).fetchall()
        )
        assert "DICTIONARY" in encodings["few"] and "DICTIONARY" not in encodings["many"]
        assert con.execute(f"select sum(many), count(*) from '{sample}'").fetchone() == (
            10 * sum(range(2000)),
            20000,
        )


def test_a_run_killed_mid_publish_leaves_the_previous_partition(small_bank, monkeypatch):
    config, _, _ = small_bank
    before = _output_digests(config)
    real_replace = warehouse.os.replace

    def killed(source, target):
        if str(target).endswith("data.parquet"):
            raise KeyboardInterrupt("killed while publishing")
        return real_replace(source, target)

    monkeypatch.setattr(warehouse.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run_stages(config, config.generate.end_on, list(STAGES[1:]), quiet())
    monkeypatch.undo()
    assert _output_digests(config) == before
    assert not list(config.paths.warehouse.glob("*/as_of=*/*.tmp-*"))
    con = open_catalog(config.paths.warehouse)
    assert con.sql("select count(*) from rfm_scores").fetchall()[0][0] > 0


def test_a_stage_failing_after_others_wrote_their_outputs_removes_them(small_bank):
    """Outputs are written once, beside their partitions, as their stages finish; a later
    stage failing discards them and leaves the published partitions as they were. (One stage
    at a time, so that rfm_scores has finished when aum_tiers fails.)"""
    bank, _, _ = small_bank
    engine = bank.engine.model_copy(update={"parallel_stages": 1})
    config = bank.model_copy(update={"engine": engine})
    before = _output_digests(config)
    original = STAGES_BY_NAME["aum_tiers"]
    written_before_failing = []

    @functools.wraps(original.transform)
    def failing(con, **inputs):
        written_before_failing.extend(config.paths.warehouse.glob("*/as_of=*/*.tmp-*"))
        # the earlier stages' outputs are read from those files
        assert con.sql("select count(*) from run_rfm_scores").fetchall()[0][0] > 0
        raise RuntimeError("stage failed")

    stages = [
        STAGES_BY_NAME["customer_features"],
        STAGES_BY_NAME["rfm_scores"],
        dataclasses.replace(original, transform=failing),
    ]
    with pytest.raises(RuntimeError, match="stage failed"):
        run_stages(config, config.generate.end_on, stages, quiet())
    assert {p.parent.parent.name for p in written_before_failing} == {
        "customer_features",
        "rfm_scores",
    }
    assert not list(config.paths.warehouse.glob("*/as_of=*/*.tmp-*"))
    assert _output_digests(config) == before


def test_a_later_run_removes_what_a_killed_run_left_behind(small_bank, tmp_path):
    """A killed run leaves its database and its unpublished outputs; the next run removes them,
    in the warehouse the killed run wrote to (another config may share paths.temp), unless
    that run still holds its lock (it is running)."""
    config, _, _ = small_bank
    temp = config.paths.temp
    elsewhere = tmp_path / "another_warehouse"  # a config sharing paths.temp
    killed, running, killed_elsewhere = (
        f"20260101T000000Z-20251231-{name}" for name in ("killed", "running", "elsewhere")
    )
    warehouses = {killed: config.paths.warehouse, running: config.paths.warehouse}
    warehouses[killed_elsewhere] = elsewhere

    def files_of(run_id):
        partition = partition_path(warehouses[run_id], "rfm_scores", config.generate.end_on)
        return [
            temp / f"run-{run_id}.lock",
            temp / f"run-{run_id}.duckdb",
            partition.with_name(f"{partition.name}.tmp-{run_id}"),
        ]

    for run_id, its_warehouse in warehouses.items():
        lock, database, output = files_of(run_id)
        lock.write_text(str(its_warehouse.resolve()))  # as a run writes it
        database.write_bytes(b"left behind")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"half written")
    reporter = quiet()
    with open(temp / f"run-{running}.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the running run's process holds it
        run_stages(config, config.generate.end_on, [STAGES_BY_NAME["rfm_scores"]], reporter)
        assert not any(path.exists() for path in files_of(killed) + files_of(killed_elsewhere))
        assert all(path.exists() for path in files_of(running))
    for run_id in (killed, killed_elsewhere):
        assert [w for w in reporter.warnings if run_id in w and "1 unpublished" in w]
    assert not [w for w in reporter.warnings if running in w]
    assert list(temp.glob("run-*.lock")) == [temp / f"run-{running}.lock"]
    for path in files_of(running):
        path.unlink()
    assert not list(temp.glob("run-*"))  # the run itself left nothing either


def test_a_stage_breaking_its_key_publishes_nothing(small_bank):
    config, _, _ = small_bank
    before = _output_digests(config)
    original = STAGES_BY_NAME["aum_tiers"]

    def duplicated(con, *, customer_features, previous_aum_tiers, params, as_of):
        once = original.transform(
            con,
            customer_features=customer_features,
            previous_aum_tiers=previous_aum_tiers,
            params=params,
            as_of=as_of,
        )
        return once.union(once)

    broken = [
        STAGES_BY_NAME["customer_features"],
        dataclasses.replace(original, transform=duplicated),
    ]
    with pytest.raises(ValidationFailed) as caught:
        run_stages(config, config.generate.end_on, broken, quiet())
    assert caught.value.exit_code == EXIT_VALIDATION
    assert "aum_tiers" in str(caught.value)
    assert _output_digests(config) == before


def test_one_stage_reruns_from_published_upstream(small_bank):
    config, _, _ = small_bank
    manifest = run_stages(config, config.generate.end_on, [STAGES_BY_NAME["rfm_scores"]], quiet())
    assert [s.status for s in manifest.stages] == ["ok"]


def test_the_run_keeps_its_tables_in_a_file_it_removes_afterwards(small_bank):
    """The run's database is a file in paths.temp (its tables can be evicted from memory
    without being written out), and neither a good nor a failed run leaves it behind."""
    config, _, _ = small_bank
    original = STAGES_BY_NAME["rfm_scores"]
    seen = []

    @functools.wraps(original.transform)  # the runner passes inputs by its signature
    def recording(con, **inputs):
        seen.append(
            con.sql(
                "select path from duckdb_databases() where database_name = current_database()"
            ).fetchall()[0][0]
        )
        return original.transform(con, **inputs)

    @functools.wraps(original.transform)
    def failing(con, **inputs):
        recording(con, **inputs)
        raise RuntimeError("stage failed")

    def run_leaving_no_database(transform):
        try:
            run_stages(
                config,
                config.generate.end_on,
                [dataclasses.replace(original, transform=transform)],
                quiet(),
            )
        finally:
            assert not list(config.paths.temp.glob("run-*.duckdb*"))

    run_leaving_no_database(recording)
    with pytest.raises(RuntimeError, match="stage failed"):
        run_leaving_no_database(failing)
    assert len(seen) == 2
    for path in map(Path, seen):
        assert path.parent == config.paths.temp.resolve() and path.name.startswith("run-")


def test_a_stage_without_its_upstream_output_is_a_usage_error(tmp_path, small_bank):
    bank, _, _ = small_bank
    config = config_for(tmp_path)
    shutil.copytree(bank.paths.staging, config.paths.staging)
    with pytest.raises(UsageError, match="customer_features"):
        run_stages(config, bank.generate.end_on, [STAGES_BY_NAME["rfm_scores"]], quiet())


def test_a_bank_with_only_transactions_skips_what_it_cannot_compute(tmp_path, small_bank):
    bank, _, _ = small_bank
    config = config_for(tmp_path)
    shutil.copytree(bank.paths.landing / "transactions", config.paths.landing / "transactions")
    reporter = quiet()
    manifest = run_stages(config, bank.generate.end_on, list(STAGES), reporter)
    status = {s.stage: s.status for s in manifest.stages}
    assert status == {stage.name: "ok" for stage in STAGES} | {
        name: "skipped" for name in ("aum_tiers", "product_rules", "next_best_products")
    }
    assert any("aum_tiers skipped" in w for w in reporter.warnings)
    assert not partition_path(config.paths.warehouse, "aum_tiers", bank.generate.end_on).exists()
    features = duckdb.sql(
        "select count(*), count(aum_cny), count(age_years) from read_parquet($p)",
        params={
            "p": str(
                partition_path(config.paths.warehouse, "customer_features", bank.generate.end_on)
            )
        },
    ).fetchall()[0]
    assert features[0] > 0 and features[1:] == (0, 0)  # null, never invented
    segments = duckdb.sql(
        "select count(*), count(aum_tier), count(coverage_model), count(lifecycle_stage) "
        "from read_parquet($p)",
        params={"p": str(partition_path(config.paths.warehouse, "segments", bank.generate.end_on))},
    ).fetchall()[0]
    assert segments == (features[0], 0, 0, features[0])


def test_the_generator_is_reproducible(tmp_path):
    digests = []
    for name in ("one", "two"):
        config = small_generate(config_for(tmp_path / name), customers=150)
        generate_bank(config)
        digests.append(
            {
                p.relative_to(config.paths.landing).as_posix(): hashlib.sha256(
                    p.read_bytes()
                ).hexdigest()
                for p in sorted(config.paths.landing.rglob("*.csv"))
            }
        )
    assert digests[0] == digests[1] and len(digests[0]) == 6 * 4


def test_the_sample_bank_has_the_structure_models_need(small_bank):
    config, result, _ = small_bank
    truth = duckdb.sql(
        f"select count(distinct persona), avg(is_churner::int), count(*) "
        f"from read_parquet('{config.paths.ground_truth}/customers.parquet')"
    ).fetchall()[0]
    assert truth[0] == 6 and 0.03 < truth[1] < 0.25 and truth[2] == config.generate.customers
    acquisitions = duckdb.sql(
        f"select count(*) from read_parquet('{config.paths.ground_truth}/acquisitions.parquet')"
    ).fetchall()[0][0]
    assert acquisitions > 0
    con = open_catalog(config.paths.warehouse)
    assert con.sql("select count(distinct aum_tier) from aum_tiers").fetchall() == [(3,)]


def test_parquet_extracts_give_the_same_tables_as_csv(tmp_path, small_bank):
    csv_bank, _, _ = small_bank
    config = small_generate(config_for(tmp_path), file_format="parquet")
    generate_bank(config)
    assert {p.suffix for p in config.paths.landing.rglob("*_*.*")} == {".parquet"}
    run_stages(config, config.generate.end_on, list(STAGES), quiet())
    assert _output_digests(config) == _output_digests(csv_bank)


def test_dimensions_agree_with_the_generators_ground_truth(small_bank):
    from tests.ground_truth import agreement_rates

    config, _, _ = small_bank
    rates = agreement_rates(config, config.generate.end_on)
    floors = {
        "service tier = tier of the target AUM (customers staying)": 0.95,
        "stated risk class = class of the latent appetite (valid questionnaire)": 0.7,
        "churned before as-of -> lapsed": 0.8,
        "opened within 180 days -> onboarding": 0.95,
        "staying customers -> not decline or lapsed": 0.85,
        "family persona under 50 -> family_with_children": 0.95,
        "retiree persona -> retired": 0.95,
        "student persona -> young_single": 0.9,
        "payroll customer <-> salary inflow detected (customers staying)": 0.95,
    }
    for check, floor in floors.items():
        share, count = rates[check]
        assert count >= 10 and share >= floor, (check, share, count)


def test_two_consecutive_as_of_dates_give_a_consistent_migration_matrix(tmp_path, small_bank):
    bank, _, _ = small_bank
    config = config_for(tmp_path)
    shutil.copytree(bank.paths.landing, config.paths.landing)
    first, second = bank.generate.end_on - timedelta(days=3), bank.generate.end_on
    run_stages(config, first, list(STAGES), quiet())
    run_stages(config, second, list(STAGES), quiet())
    con = open_catalog(config.paths.warehouse)
    counts = dict(con.sql("select as_of, count(*) from segments_history group by as_of").fetchall())
    assert set(counts) == {first, second}
    totals = con.sql("""
        select dimension, previous_as_of,
               sum(customers) filter (where to_value <> '(absent)'),
               sum(customers) filter (where from_value <> '(absent)')
        from segment_migrations group by all
    """).fetchall()
    assert {d for d, *_ in totals} == set(config.segments.migration_dimensions) | {"segment_code"}
    for dimension, previous_as_of, now, before in totals:
        assert previous_as_of == first
        assert (now, before) == (counts[second], counts[first]), dimension
    changed = con.sql(
        "select count(*) filter (where len(changed_dimensions) > 0), count(changed_dimensions), "
        "count(*) filter (where previous_as_of = $first) from segments",
        params={"first": first},
    ).fetchall()[0]
    assert changed[1] > 0 and changed[2] == counts[second]
    moved = con.sql(
        "select sum(customers) from segment_migrations where is_change "
        "and dimension <> 'segment_code' and from_value <> '(absent)' and to_value <> '(absent)'"
    ).fetchall()[0][0]
    assert changed[0] <= (moved or 0)  # each changed customer is counted in some matrix cell
    # cluster ids carry over: every cluster matched the first run's
    statuses = con.sql("select status, count(*) from cluster_profiles group by all").fetchall()
    assert dict(statuses).get("continuing", 0) >= config.clusters.k - 1, statuses
    fits = con.sql(
        "select term, value from model_fits where model = 'kmeans' and as_of = $d",
        params={"d": second},
    ).fetchall()
    assert dict(fits)["k"] == config.clusters.k and dict(fits)["bootstrap_ari_mean"] > 0.3
    # hysteresis reads the first run's tiers
    assert con.sql("select count(previous_aum_tier) from aum_tiers").fetchall()[0][0] > 0
