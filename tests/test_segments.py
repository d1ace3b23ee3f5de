"""Golden tests for segments, segment_migrations, segment_summaries and feature_coverage."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import DEFAULT_CONFIG
from transforms.feature_coverage import coverage_warnings, feature_coverage
from transforms.segment_migrations import segment_migrations
from transforms.segment_summaries import segment_summaries
from transforms.segments import segments

AS_OF, PREVIOUS_AS_OF = date(2026, 3, 31), date(2026, 3, 30)
CONFIG = load_config(DEFAULT_CONFIG, environ={})

# customer: tier row (aum, aum tier, private banking) or None, stated class, life stage
CURRENT = {
    "A": ((800_000, "affluent", False), "balanced", "family_with_children"),
    "B": ((12_000_000, "hnw", True), "conservative", "retired"),
    "C": (None, None, "young_single"),
}
PREVIOUS = {
    "A": ((800_000, "affluent", False), "steady", "family_with_children"),
    "B": ((12_000_000, "hnw", True), "conservative", "retired"),
    "D": ((100, "mass", False), "steady", "young_single"),  # left since
}


def load_inputs(con: duckdb.DuckDBPyConnection, customers: dict) -> None:
    ids = list(customers)
    con.execute(
        "create or replace table features as select unnest($ids) as customer_id, "
        "unnest($ages) as age_years",
        {"ids": ids, "ages": [40] * len(ids)},
    )
    con.execute("""create or replace table tiers (customer_id varchar, aum_cny decimal(18,2),
                   aum_avg_cny decimal(18,2), aum_tier varchar, aum_tier_name_zh varchar,
                   is_private_banking boolean, service_tier varchar)""")
    for c, (tier, _, _) in customers.items():
        if tier:
            aum, code, private = tier
            con.execute(
                "insert into tiers values (?, ?, ?, ?, '', ?, ?)",
                [c, aum, aum, code, private, "private_banking" if private else code],
            )
    con.execute("""create or replace table risks (customer_id varchar, stated_risk_class varchar,
                   behavioural_risk_class varchar, questionnaire_status varchar,
                   max_product_risk_level varchar, is_risk_mismatch boolean,
                   is_latent_aggressive boolean, risk_flags varchar[])""")
    con.executemany(
        "insert into risks values (?, ?, null, 'valid', null, false, false, [])",
        [(c, risk) for c, (_, risk, _) in customers.items()],
    )
    con.execute(
        "create or replace table lives (customer_id varchar, life_stage varchar, "
        "occupation varchar)"
    )
    con.executemany(
        "insert into lives values (?, ?, 'salaried')",
        [(c, life) for c, (_, _, life) in customers.items()],
    )
    for name, column, value in (
        ("lifecycles", "lifecycle_stage", "mature"),
        ("depths", "relationship_depth", "basic"),
        ("rfm", "rfm_segment", "loyal"),
    ):
        con.execute(
            f"create or replace table {name} as select customer_id, "
            f"'{value}' as {column}, '345' as rfm_cell from features"
        )


def run_segments(con, customers, previous=None, as_of=AS_OF, with_tiers=True):
    load_inputs(con, customers)
    return segments(
        con,
        customer_features="features",
        rfm_scores="rfm",
        risk_profiles="risks",
        lifecycle_stages="lifecycles",
        life_stages="lives",
        relationship_depth="depths",
        aum_tiers="tiers" if with_tiers else None,
        clusters=None,
        clv_estimates=None,
        churn_scores=None,
        banking_values=None,
        previous_segments=previous,
        params=CONFIG.segments,
        as_of=as_of,
    )


@pytest.fixture
def con():
    con = duckdb.connect()
    run_segments(con, PREVIOUS, as_of=PREVIOUS_AS_OF).to_table("previous_segments")
    run_segments(con, CURRENT, previous="previous_segments").to_table("current_segments")
    return con


def rows(con, name) -> dict[str, dict]:
    return {r["customer_id"]: r for r in con.table(name).pl().iter_rows(named=True)}


def test_segment_code_and_service_treatment(con):
    out = rows(con, "current_segments")
    assert out["A"]["segment_code"] == "A-C3-FC"
    assert out["B"]["segment_code"] == "H-C1-RT"
    assert out["C"]["segment_code"] == "NA-NA-YS"  # no tier, no questionnaire
    assert (out["A"]["coverage_model"], out["A"]["response_sla_hours"]) == (
        "relationship_manager",
        1.0,
    )
    assert out["B"]["service_tier"] == "private_banking" and out["B"]["aum_tier"] == "hnw"
    assert (out["B"]["coverage_model"], out["B"]["value_added_services"]) == ("private_banker", 6)
    assert out["C"]["coverage_model"] is None and out["C"]["service_tier"] is None
    # the model columns exist, typed, null until the model stages fill them
    assert all(out["A"][c] is None for c in ("cluster_id", "churn_probability", "clv_cny"))


def test_changes_against_the_previous_run(con):
    out = rows(con, "current_segments")
    assert out["A"]["previous_as_of"] == PREVIOUS_AS_OF
    assert out["A"]["previous_segment_code"] == "A-C2-FC"
    assert out["A"]["changed_dimensions"] == ["stated_risk_class"]
    assert out["B"]["changed_dimensions"] == []
    assert out["C"]["changed_dimensions"] is None  # not there last time
    first = rows(con, "previous_segments")
    assert first["A"]["previous_as_of"] is None and first["A"]["changed_dimensions"] is None


def test_inputs_in_any_order_give_the_same_rows_in_customer_id_order(con):
    shuffled = dict(reversed(list(CURRENT.items())))  # every input table in C, B, A order
    again = run_segments(con, shuffled, previous="previous_segments").pl()
    assert again["customer_id"].to_list() == ["A", "B", "C"]
    assert again.equals(con.table("current_segments").pl())


def test_migration_matrix_totals_match_both_runs(con):
    relation = segment_migrations(
        con,
        segments="current_segments",
        previous_segments="previous_segments",
        params=CONFIG.segments,
        as_of=AS_OF,
    )
    matrix = relation.pl()
    dimensions = set(matrix["dimension"])
    assert dimensions == set(CONFIG.segments.migration_dimensions) | {"segment_code"}
    for dimension in dimensions:
        moves = matrix.filter(matrix["dimension"] == dimension)
        assert moves.filter(moves["to_value"] != "(absent)")["customers"].sum() == 3
        assert moves.filter(moves["from_value"] != "(absent)")["customers"].sum() == 3
    risk_moves = matrix.filter(matrix["dimension"] == "stated_risk_class")
    risk = {
        (r["from_value"], r["to_value"]): r["customers"] for r in risk_moves.iter_rows(named=True)
    }
    assert risk == {
        ("steady", "balanced"): 1,
        ("conservative", "conservative"): 1,
        ("(absent)", "(none)"): 1,
        ("steady", "(absent)"): 1,
    }
    assert set(matrix["previous_as_of"]) == {PREVIOUS_AS_OF}


def test_no_previous_run_gives_an_empty_matrix(con):
    relation = segment_migrations(
        con,
        segments="current_segments",
        previous_segments=None,
        params=CONFIG.segments,
        as_of=AS_OF,
    )
    assert relation.fetchall() == [] and "from_value" in relation.columns


def test_summaries_size_and_describe_every_segment(con):
    params = CONFIG.segments.model_copy(update={"summary_features": ["age_years"]})
    relation = segment_summaries(
        con, segments="current_segments", customer_features="features", params=params, as_of=AS_OF
    )
    summary = relation.pl()
    for dimension in set(summary["dimension"]):
        part = summary.filter(summary["dimension"] == dimension)
        assert part["customers"].sum() == 3
        assert part["share_of_customers"].sum() == pytest.approx(1.0)
    tiers = {
        r["segment_value"]: r
        for r in summary.filter(summary["dimension"] == "service_tier").iter_rows(named=True)
    }
    assert set(tiers) == {"affluent", "private_banking", "(none)"}
    assert float(tiers["private_banking"]["aum_total_cny"]) == 12_000_000
    assert tiers["(none)"]["aum_total_cny"] is None
    assert tiers["affluent"]["mean_age_years"] == 40
    with pytest.raises(ConfigError, match="tenure_days"):
        segment_summaries(
            con,
            segments="current_segments",
            customer_features="features",
            params=CONFIG.segments,
            as_of=AS_OF,
        )


def test_feature_coverage_and_its_warnings():
    con = duckdb.connect()
    con.execute("""
        create table features as select * from (values
            ('A', 30, 'salaried', 'single', DATE '2026-03-01', 2, DATE '2026-03-01', 50,
             'x', 'b', 1),
            ('B', NULL, 'salaried', 'single', NULL, 0, NULL, NULL, 'x', 'b', 1),
            ('C', 40, 'retired', 'married', DATE '2026-03-01', 1, NULL, 60, 'y', NULL, 2),
            ('D', 50, 'retired', 'married', DATE '2026-03-01', NULL, NULL, NULL, 'z', 'c', 3)
        ) t(customer_id, age_years, occupation, marital_status, last_txn_on, products_held,
            last_event_on, risk_score, city, income_band, credit_score)
    """)
    params = CONFIG.customer_features.model_copy(
        update={
            "coverage": CONFIG.customer_features.coverage.model_copy(
                update={"min_share_by_group": {"behaviour": 0.25}}
            )
        }
    )
    coverage = feature_coverage(con, customer_features="features", params=params, as_of=AS_OF)
    coverage.to_table("coverage")
    shares = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            "select feature_group, coverage_share, is_below_minimum from coverage"
        ).fetchall()
    }
    assert shares == {
        "demographics": (0.75, True),
        "transactions": (0.75, True),
        "holdings": (0.5, True),
        "behaviour": (0.25, False),  # its own minimum
        "questionnaire": (0.5, True),
        "extra_attributes": (0.75, True),
    }
    warnings = coverage_warnings(con, "coverage")
    assert len(warnings) == 5
    assert "holdings covers 50.0% of customers, under the minimum 90% (2 of 4)" in warnings[2]
