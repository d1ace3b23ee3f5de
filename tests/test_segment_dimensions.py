"""Golden tests for the segment dimensions: boundary values at every threshold, hysteresis,
the rule mechanism, and the risk cross-checks."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.config import ClassRule, RuleDimensionParams, load_config
from pipeline.errors import ConfigError
from tests.conftest import DEFAULT_CONFIG
from transforms.aum_tiers import aum_tiers
from transforms.life_stages import life_stages
from transforms.lifecycle_stages import lifecycle_stages
from transforms.relationship_depth import relationship_depth
from transforms.risk_profiles import risk_profiles
from transforms.rules import classify

AS_OF = date(2026, 3, 31)
CONFIG = load_config(DEFAULT_CONFIG, environ={})


def by_customer(relation) -> dict[str, dict]:
    return {r["customer_id"]: r for r in relation.pl().iter_rows(named=True)}


def table(con, name: str, columns: str, rows: list[tuple]) -> str:
    con.execute(f"create or replace table {name} ({columns})")
    if rows:
        con.executemany(f"insert into {name} values ({', '.join('?' * len(rows[0]))})", rows)
    return name


# --- aum_tiers ------------------------------------------------------------------------------

TIER_CASES = [
    # customer, average AUM, previous tier, was private banking, expected tier, private banking
    ("plain_mass_edge", 499_999.99, None, None, "mass", False),
    ("plain_affluent_edge", 500_000, None, None, "affluent", False),
    ("plain_hnw_edge", 3_000_000, None, None, "hnw", False),
    ("plain_private_edge", 10_000_000, None, None, "hnw", True),
    ("up_not_cleared", 549_999.99, "mass", False, "mass", False),
    ("up_cleared", 550_000, "mass", False, "affluent", False),
    ("down_not_cleared", 450_000, "affluent", False, "affluent", False),
    ("down_cleared", 449_999.99, "affluent", False, "mass", False),
    ("hnw_held", 2_700_000, "hnw", False, "hnw", False),
    ("hnw_lost", 2_699_999.99, "hnw", False, "affluent", False),
    ("jumps_two_tiers", 3_300_000, "mass", False, "hnw", False),
    ("falls_two_tiers", 400_000, "hnw", False, "mass", False),
    ("private_kept", 9_000_000, "hnw", True, "hnw", True),
    ("private_lost", 8_999_999.99, "hnw", True, "hnw", False),
    ("private_not_yet", 10_999_999.99, "hnw", False, "hnw", False),
    ("private_reached", 11_000_000, "hnw", False, "hnw", True),
]


def test_aum_tiers_boundaries_and_hysteresis():
    con = duckdb.connect()
    table(
        con,
        "features",
        "customer_id varchar, aum_cny decimal(18,2), aum_avg_cny decimal(18,2)",
        [(c, aum, aum) for c, aum, *_ in TIER_CASES] + [("no_balances", None, None)],
    )
    table(
        con,
        "previous",
        "customer_id varchar, as_of date, aum_tier varchar, is_private_banking boolean",
        [(c, date(2026, 3, 30), tier, pb) for c, _, tier, pb, *_ in TIER_CASES if tier],
    )
    rows = by_customer(
        aum_tiers(
            con,
            customer_features="features",
            previous_aum_tiers="previous",
            params=CONFIG.aum_tiers,
            as_of=AS_OF,
        )
    )
    assert "no_balances" not in rows  # no tier is invented
    for customer, _, previous, _, tier, private in TIER_CASES:
        row = rows[customer]
        assert (row["aum_tier"], row["is_private_banking"]) == (tier, private), customer
        assert row["service_tier"] == ("private_banking" if private else tier), customer
        assert row["previous_aum_tier"] == previous
        assert row["is_held_by_hysteresis"] == (row["tier_without_hysteresis"] != tier)
    assert rows["up_not_cleared"]["tier_without_hysteresis"] == "affluent"
    assert rows["up_not_cleared"]["is_held_by_hysteresis"] is True
    assert rows["plain_affluent_edge"]["aum_tier_name_zh"] == "潜力客户"


def test_aum_tiers_without_a_previous_run_use_plain_boundaries():
    con = duckdb.connect()
    table(
        con,
        "features",
        "customer_id varchar, aum_cny decimal(18,2), aum_avg_cny decimal(18,2)",
        [("A", 3_100_000, 549_999)],
    )
    rows = by_customer(
        aum_tiers(
            con,
            customer_features="features",
            previous_aum_tiers=None,
            params=CONFIG.aum_tiers,
            as_of=AS_OF,
        )
    )
    # the tier follows the average, not today's balance
    assert rows["A"]["aum_tier"] == "affluent" and rows["A"]["previous_aum_tier"] is None


# --- risk_profiles --------------------------------------------------------------------------

RISK_COLUMNS = (
    "customer_id varchar, risk_score bigint, risk_assessed_on date, "
    "risk_assessment_expired boolean, highest_risk_level_held varchar, "
    "aum_share_r1 double, aum_share_r2 double, aum_share_r3 double, aum_share_r4 double, "
    "aum_share_r5 double, risk_asset_share double, risk_purchases_90d_cny decimal(18,2)"
)


def risk_row(customer, score, expired=False, shares=(1, 0, 0, 0, 0), purchases=0):
    risk_share = sum(shares[2:]) if shares else None
    return (
        customer,
        score,
        date(2026, 1, 1) if score is not None else None,
        expired if score is not None else None,
        None,
        *(shares or (None,) * 5),
        risk_share,
        purchases,
    )


def test_risk_classes_at_every_score_boundary_and_questionnaire_status():
    con = duckdb.connect()
    scores = {
        "s0": 0,
        "s29": 29,
        "s30": 30,
        "s49": 49,
        "s50": 50,
        "s69": 69,
        "s70": 70,
        "s100": 100,
    }
    rows = [risk_row(c, s) for c, s in scores.items()]
    rows += [risk_row("expired", 80, expired=True), risk_row("missing", None)]
    table(con, "features", RISK_COLUMNS, rows)
    out = by_customer(
        risk_profiles(con, customer_features="features", params=CONFIG.risk_profiles, as_of=AS_OF)
    )
    assert [out[c]["stated_risk_class"] for c in scores] == [
        "conservative",
        "conservative",
        "steady",
        "steady",
        "balanced",
        "balanced",
        "aggressive",
        "aggressive",
    ]
    assert [out[c]["max_product_risk_level"] for c in ("s0", "s30", "s50", "s70")] == [
        "R1",
        "R2",
        "R3",
        "R5",
    ]
    assert out["s50"]["stated_risk_class_name_zh"] == "平衡"
    expired = out["expired"]
    assert expired["questionnaire_status"] == "expired"
    assert expired["stated_risk_class"] == "aggressive"  # what he said is kept ...
    assert expired["max_product_risk_level"] is None  # ... but sells nothing risky
    assert expired["risk_flags"] == ["questionnaire_expired"]
    missing = out["missing"]
    assert missing["questionnaire_status"] == "missing" and missing["stated_risk_class"] is None
    assert missing["risk_flags"] == ["questionnaire_missing"]
    assert out["s0"]["risk_flags"] == [] and out["s0"]["questionnaire_status"] == "valid"


def test_behavioural_risk_mismatch_and_latent_aggressive():
    con = duckdb.connect()
    rows = [
        # an R4 holding below the material share does not count
        risk_row("immaterial", 10, shares=(0.96, 0, 0, 0.04, 0)),
        risk_row("material", 10, shares=(0.95, 0, 0, 0.05, 0)),
        risk_row("balanced_holder", 55, shares=(0.5, 0, 0.5, 0, 0)),
        risk_row("steady_at_share", 40, shares=(0.7, 0, 0.3, 0, 0)),
        risk_row("steady_below_share", 40, shares=(0.71, 0, 0.29, 0, 0)),
        risk_row("balanced_not_latent", 55, shares=(0.1, 0, 0.9, 0, 0)),
        risk_row("cautious_buyer", 10, shares=(1, 0, 0, 0, 0), purchases=10_000),
        risk_row("cautious_small_buyer", 10, shares=(1, 0, 0, 0, 0), purchases=9_999.99),
        risk_row("no_aum", 10, shares=None),
    ]
    table(con, "features", RISK_COLUMNS, rows)
    out = by_customer(
        risk_profiles(con, customer_features="features", params=CONFIG.risk_profiles, as_of=AS_OF)
    )
    assert out["immaterial"]["behavioural_risk_level"] == "R1"
    assert out["immaterial"]["is_risk_mismatch"] is False
    assert out["material"]["behavioural_risk_level"] == "R4"
    assert out["material"]["behavioural_risk_class"] == "aggressive"
    assert out["material"]["is_risk_mismatch"] is True
    assert out["balanced_holder"]["behavioural_risk_class"] == "balanced"
    assert out["balanced_holder"]["is_risk_mismatch"] is False
    assert out["steady_at_share"]["is_latent_aggressive"] is True
    assert out["steady_at_share"]["risk_flags"] == ["risk_mismatch", "latent_aggressive"]
    assert out["steady_below_share"]["is_latent_aggressive"] is False
    assert out["balanced_not_latent"]["is_latent_aggressive"] is False  # not a cautious class
    assert out["cautious_buyer"]["is_latent_aggressive"] is True
    assert out["cautious_small_buyer"]["is_latent_aggressive"] is False
    assert out["no_aum"]["behavioural_risk_class"] is None
    assert out["no_aum"]["is_risk_mismatch"] is False


# --- the rule mechanism and the rule-based dimensions ---------------------------------------


def rules(*specs) -> list[ClassRule]:
    return RuleDimensionParams.model_validate({"rules": list(specs)}).rules


def test_rules_first_match_wins_nulls_fail_and_any_of_lists():
    con = duckdb.connect()
    table(
        con,
        "features",
        "customer_id varchar, x double, flag boolean, kind varchar",
        [
            ("low", 1, False, "a"),
            ("edge", 5, False, "b"),
            ("null_x", None, True, "c"),
            ("other", 9, False, "z"),
        ],
    )
    result = by_customer(
        classify(
            con,
            "features",
            rules(
                {"code": "small", "name_zh": "小", "when": {"x": {"lt": 5}}},
                {
                    "code": "flagged",
                    "name_zh": "标",
                    "when": [{"flag": {"eq": True}}, {"kind": {"in": ["b"]}}],
                },
                {"code": "rest", "name_zh": "其他"},
            ),
            dimension="size",
            config_block="test",
            as_of=AS_OF,
        )
    )
    assert {c: r["size"] for c, r in result.items()} == {
        "low": "small",
        "edge": "flagged",
        "null_x": "flagged",
        "other": "rest",
    }
    assert result["low"]["size_rule"] == "x < 5"
    assert result["edge"]["size_rule"] == "flag = true or kind in (b)"
    assert result["other"]["size_rule"] == "otherwise" and result["other"]["x"] == 9


def test_rules_reject_unknown_features_and_a_missing_catch_all():
    con = duckdb.connect()
    table(con, "features", "customer_id varchar, x double", [("a", 1)])
    with pytest.raises(ConfigError, match="unknown feature.*nope"):
        classify(
            con,
            "features",
            rules(
                {"code": "a", "name_zh": "a", "when": {"nope": {"lt": 1}}},
                {"code": "b", "name_zh": "b"},
            ),
            dimension="d",
            config_block="test",
            as_of=AS_OF,
        )
    with pytest.raises(ValueError, match="last rule"):
        rules({"code": "a", "name_zh": "a", "when": {"x": {"lt": 1}}})


LIFECYCLE_COLUMNS = (
    "customer_id varchar, tenure_days bigint, days_since_last_activity bigint, "
    "activity_trend double, txn_count_previous bigint, aum_change_3m_pct double, "
    "aum_change_12m_pct double"
)


def test_lifecycle_stage_boundaries():
    con = duckdb.connect()
    cases = {
        # customer: (tenure, days inactive, trend, previous count, aum 3m, aum 12m) -> stage
        "tenure_179": ((179, 0, 0.0, 0, 0.0, 0.0), "onboarding"),
        "inactive_180": ((2000, 180, 0.0, 10, 0.0, 0.0), "lapsed"),
        "inactive_179": ((2000, 179, 0.0, 10, 0.0, 0.0), "mature"),
        "never_active": ((2000, None, None, 0, None, None), "lapsed"),
        "emptied": ((2000, 5, 0.0, 10, -0.9, 0.0), "lapsed"),
        "trend_with_volume": ((2000, 5, -0.5, 6, 0.0, 0.0), "decline"),
        "trend_without_volume": ((2000, 5, -0.5, 5, 0.0, 0.0), "mature"),
        "trend_mild": ((2000, 5, -0.49, 10, 0.0, 0.0), "mature"),
        "aum_falling": ((2000, 5, 0.0, 10, -0.3, 0.0), "decline"),
        "young_relationship": ((1094, 5, 0.0, 10, 0.0, 0.0), "growth"),
        "three_years": ((1095, 5, 0.0, 10, 0.0, 0.0), "mature"),
        "aum_growing": ((5000, 5, 0.0, 10, 0.0, 0.25), "growth"),
    }
    table(con, "features", LIFECYCLE_COLUMNS, [(c, *v) for c, (v, _) in cases.items()])
    out = by_customer(
        lifecycle_stages(
            con, customer_features="features", params=CONFIG.lifecycle_stages, as_of=AS_OF
        )
    )
    assert {c: out[c]["lifecycle_stage"] for c in cases} == {c: e for c, (_, e) in cases.items()}
    assert out["tenure_179"]["lifecycle_stage_rule"] == "tenure_days < 180"


def test_life_stage_boundaries_and_occupation_kept():
    con = duckdb.connect()
    cases = {
        "retired_at_40": (("retired", 40, "married", 0), "retired"),
        "aged_65": (("salaried", 65, "married", 0), "retired"),
        "age_unknown": (("salaried", None, "single", 0), "unknown"),
        "aged_50": (("business_owner", 50, "married", 2), "pre_retirement"),
        "parent_49": (("salaried", 49, "married", 1), "family_with_children"),
        "single_34": (("freelancer", 34, "single", 0), "young_single"),
        "single_35": (("salaried", 35, "single", 0), "adult_no_children"),
        "married_30": (("salaried", 30, "married", 0), "adult_no_children"),
        "divorced_25": (("student", 25, "divorced", 0), "young_single"),
    }
    table(
        con,
        "features",
        "customer_id varchar, occupation varchar, age_years bigint, marital_status varchar, "
        "children_count bigint",
        [(c, *v) for c, (v, _) in cases.items()],
    )
    out = by_customer(
        life_stages(con, customer_features="features", params=CONFIG.life_stages, as_of=AS_OF)
    )
    assert {c: out[c]["life_stage"] for c in cases} == {c: e for c, (_, e) in cases.items()}
    assert out["aged_50"]["occupation"] == "business_owner"


def test_relationship_depth_rules():
    con = duckdb.connect()
    cases = {
        "deposits_only": ((1, 1, 0, False, False), "basic"),
        "card_too": ((2, 2, 0, True, False), "basic"),  # payroll alone is not depth
        "fund_holder": ((2, 2, 1, False, False), "multi_product"),
        "payroll_and_fund": ((3, 2, 1, True, False), "ecosystem"),
        "business_and_loan": ((3, 2, 1, False, True), "ecosystem"),
        "unknown_holdings": ((None, None, None, True, False), "basic"),
    }
    table(
        con,
        "features",
        "customer_id varchar, products_held bigint, product_families_held bigint, "
        "non_payment_families_held bigint, has_salary_inflow boolean, has_business_link boolean",
        [(c, *v) for c, (v, _) in cases.items()],
    )
    out = by_customer(
        relationship_depth(
            con, customer_features="features", params=CONFIG.relationship_depth, as_of=AS_OF
        )
    )
    assert {c: out[c]["relationship_depth"] for c in cases} == {c: e for c, (_, e) in cases.items()}


def test_the_default_rfm_mapping_names_every_segment_the_domain_uses():
    codes = {s.code for s in CONFIG.rfm_scores.segments}
    assert codes == {
        "champions",
        "loyal",
        "potential_loyalist",
        "new",
        "at_risk",
        "cannot_lose",
        "hibernating",
        "lost",
    }
