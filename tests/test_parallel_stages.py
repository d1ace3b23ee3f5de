"""Stages side by side (engine.parallel_stages): the same outputs as one at a time, the longest
chain of work first, and a failing stage stops the one beside it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
import time

import duckdb
import pytest

from pipeline.registry import STAGES, STAGES_BY_NAME, upstream
from pipeline.runner import _critical_path_first, last_stage_seconds, run_stages
from tests.conftest import quiet


def _digests(config, as_of) -> dict[str, str]:
    return {
        str(p.relative_to(config.paths.warehouse)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(config.paths.warehouse.glob(f"*/as_of={as_of}/*.parquet"))
    }


def _one_at_a_time(config):
    engine = config.engine.model_copy(update={"parallel_stages": 1})
    return config.model_copy(update={"engine": engine})


def test_stages_side_by_side_write_the_same_bytes_as_one_at_a_time(published_copy):
    """The sample bank was run with the default (two stages at a time); the copy is run again
    one stage at a time: every published file is byte for byte the same."""
    bank, copy = published_copy
    assert bank.engine.parallel_stages == 2
    as_of = bank.generate.end_on
    side_by_side = _digests(bank, as_of)
    manifest = run_stages(_one_at_a_time(copy), as_of, list(STAGES[1:]), quiet())
    assert {s.status for s in manifest.stages} == {"ok"}
    assert len(side_by_side) > len(STAGES)  # every table, model_fits per model stage
    assert _digests(copy, as_of) == side_by_side


def test_ready_stages_run_side_by_side(published_copy):
    """rfm_scores and aum_tiers both wait only for customer_features: each waits for the other
    to have started, which one stage at a time would never see (the barrier times out)."""
    bank, copy = published_copy
    both_started = threading.Barrier(2, timeout=60)

    def meeting(stage):
        @functools.wraps(stage.transform)
        def transform(con, **inputs):
            both_started.wait()
            return stage.transform(con, **inputs)

        return dataclasses.replace(stage, transform=transform)

    stages = [
        STAGES_BY_NAME["customer_features"],
        meeting(STAGES_BY_NAME["rfm_scores"]),
        meeting(STAGES_BY_NAME["aum_tiers"]),
    ]
    manifest = run_stages(copy, bank.generate.end_on, stages, quiet())
    assert [s.status for s in manifest.stages] == ["ok", "ok", "ok"]


def _waits_for(stages):
    names = {s.name for s in stages}
    return {s.name: {u for u in upstream(s) if u in names} for s in stages}


def test_the_stage_heading_the_longest_chain_of_work_starts_first():
    stages = list(STAGES[1:])
    waits_for = _waits_for(stages)
    seconds = {"customer_features": 90, "product_rules": 5, "next_best_products": 60}
    seconds |= {"churn_scores": 20, "banking_values": 2, "segments": 20}
    order = [s.name for s in _critical_path_first(stages, waits_for, seconds)]
    assert order[0] == "customer_features"  # everything waits for it
    # product_rules -> next_best_products (65 s) before churn -> banking -> segments (42 s + 2)
    assert order.index("product_rules") < order.index("churn_scores")
    seconds["next_best_products"] = 10
    order = [s.name for s in _critical_path_first(stages, waits_for, seconds)]
    assert order.index("churn_scores") < order.index("product_rules")
    # untimed stages count a second each: the longer chain first, ties in DAG order
    order = [s.name for s in _critical_path_first(stages, waits_for, {})]
    assert order.index("churn_scores") < order.index("product_rules")  # 5 stages against 2
    assert order.index("rfm_scores") < order.index("aum_tiers")  # both head 4


def test_stage_seconds_come_from_the_newest_run_that_ran_each_stage(small_bank):
    config, _, manifest = small_bank
    seconds = last_stage_seconds(config)
    ran = {s.stage: s.seconds for s in manifest.stages if s.status == "ok"}
    assert set(ran) <= set(seconds)
    assert all(value >= 0 for value in seconds.values())


def test_a_failing_stage_interrupts_the_one_beside_it_and_publishes_nothing(published_copy):
    bank, copy = published_copy
    as_of = bank.generate.end_on
    before = _digests(copy, as_of)
    querying, seen = threading.Event(), []

    @functools.wraps(STAGES_BY_NAME["rfm_scores"].transform)
    def endless(con, **inputs):
        querying.set()
        try:  # minutes of work unless interrupted
            con.sql("select count(*) from range(1000000000000) t(x) where x % 7 = 3").fetchall()
        except duckdb.InterruptException as stopped:
            seen.append(stopped)
            raise

    @functools.wraps(STAGES_BY_NAME["aum_tiers"].transform)
    def failing(con, **inputs):
        assert querying.wait(60)
        time.sleep(0.3)  # let the endless query start
        raise RuntimeError("stage failed")

    stages = [
        STAGES_BY_NAME["customer_features"],
        dataclasses.replace(STAGES_BY_NAME["rfm_scores"], transform=endless),
        dataclasses.replace(STAGES_BY_NAME["aum_tiers"], transform=failing),
    ]
    with pytest.raises(RuntimeError, match="stage failed"):
        run_stages(copy, as_of, stages, quiet())
    assert len(seen) == 1
    manifests = sorted((copy.paths.warehouse / "run_manifests").glob("*.json"))
    statuses = {s["stage"]: s["status"] for s in json.loads(manifests[-1].read_text())["stages"]}
    assert statuses == {
        "customer_features": "ok",
        "rfm_scores": "interrupted",
        "aum_tiers": "failed",
    }
    assert not list(copy.paths.warehouse.glob("*/as_of=*/*.tmp-*"))
    assert _digests(copy, as_of) == before
    assert not list(copy.paths.temp.glob("run-*"))


def test_one_at_a_time_the_stages_run_in_dag_order(published_copy):
    """Whatever the last runs' seconds say (here: aum_tiers heads the longest chain), one stage
    at a time runs in the registry's order, as a failure test or a reader of the log expects."""
    bank, copy = published_copy
    manifests = copy.paths.warehouse / "run_manifests"
    (manifests / "99999999T999999Z-slow.json").write_text(
        json.dumps({"stages": [{"stage": "aum_tiers", "status": "ok", "seconds": 1000.0}]})
    )
    assert last_stage_seconds(copy)["aum_tiers"] == 1000.0
    ran = []

    def recording(stage):
        @functools.wraps(stage.transform)
        def transform(con, **inputs):
            ran.append(stage.name)
            return stage.transform(con, **inputs)

        return dataclasses.replace(stage, transform=transform)

    stages = [
        recording(STAGES_BY_NAME[n]) for n in ("customer_features", "rfm_scores", "aum_tiers")
    ]
    run_stages(_one_at_a_time(copy), bank.generate.end_on, stages, quiet())
    assert ran == ["customer_features", "rfm_scores", "aum_tiers"]
