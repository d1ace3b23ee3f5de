"""Golden tests: each stage on tiny hand-written tables with the edge rows."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.config import load_config
from tests.conftest import DEFAULT_CONFIG
from transforms.aum_tiers import aum_tiers
from transforms.customer_features import customer_features
from transforms.rfm_scores import rfm_scores

AS_OF = date(2026, 3, 31)
CONFIG = load_config(DEFAULT_CONFIG, environ={})


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("""
        create table stg_customers as select * from (values
            ('C1', DATE '1990-04-01', DATE '2026-03-01', 'M', 'salaried', 'single', 0),
            ('C2', NULL,              DATE '2020-01-01', 'F', 'retired', 'widowed', 2),
            ('C3', DATE '1970-01-01', DATE '2026-04-15', 'F', 'salaried', 'married', 1),
            ('C4', DATE '1980-03-31', DATE '2010-01-01', 'M', 'business_owner', 'married', 1)
        ) t(customer_id, birth_on, opened_on, gender, occupation, marital_status, children_count);
        create table stg_transactions as select * from (values
            ('T1', 'C1', TIMESTAMP '2026-03-31 23:59:59', 10.00, 'debit'),   -- on as_of
            ('T2', 'C1', TIMESTAMP '2026-03-02 00:00:00', 20.00, 'credit'),  -- day 29: in 30d
            ('T3', 'C1', TIMESTAMP '2026-03-01 12:00:00', 40.00, 'debit'),   -- day 30: not in 30d
            ('T4', 'C1', TIMESTAMP '2025-03-31 08:00:00', 80.00, 'debit'),   -- day 365: out
            ('T5', 'C1', TIMESTAMP '2026-04-01 00:00:00', 160.00, 'debit'),  -- after as_of
            ('T6', 'C2', TIMESTAMP '2026-01-15 09:00:00', 300.00, 'credit')
        ) t(transaction_id, customer_id, transaction_at, amount_cny, direction);
        create table stg_products as select * from (values
            ('DEP', 'asset'), ('FUND', 'asset'), ('LOAN', 'liability')
        ) t(product_id, balance_type);
        create table stg_balances as select * from (values
            ('C1', 'DEP',  DATE '2026-03-31', 1000.00),
            ('C1', 'FUND', DATE '2026-03-31', 0.00),
            ('C1', 'LOAN', DATE '2026-03-31', 5000.00),
            ('C2', 'DEP',  DATE '2026-02-28', 200.00),   -- not on the latest snapshot
            ('C1', 'DEP',  DATE '2026-04-30', 9999.00)   -- after as_of
        ) t(customer_id, product_id, balance_on, balance_cny);
    """)
    return con


def _features(con, **inputs):
    relation = customer_features(
        con,
        stg_transactions="stg_transactions",
        stg_customers=inputs.get("stg_customers", "stg_customers"),
        stg_balances=inputs.get("stg_balances", "stg_balances"),
        stg_products=inputs.get("stg_products", "stg_products"),
        params=CONFIG.customer_features,
        as_of=AS_OF,
    )
    return {row["customer_id"]: row for row in relation.pl().iter_rows(named=True)}


def test_customer_features_windows_population_and_holdings(con):
    rows = _features(con)
    assert sorted(rows) == ["C1", "C2", "C4"]  # C3 opens after the as-of date
    c1 = rows["C1"]
    assert (c1["txn_count_30d"], c1["txn_count_90d"], c1["txn_count_365d"]) == (2, 3, 3)
    assert float(c1["txn_amount_30d_cny"]) == 30.0
    assert float(c1["inflow_30d_cny"]) == 20.0 and float(c1["outflow_90d_cny"]) == 50.0
    assert c1["days_since_last_txn"] == 0 and c1["last_txn_on"] == AS_OF
    assert c1["age_years"] == 35  # birthday is tomorrow
    assert c1["tenure_days"] == 30
    assert float(c1["aum_cny"]) == 1000.0  # the loan is not AUM
    assert float(c1["loan_balance_cny"]) == 5000.0
    assert c1["products_held"] == 2  # a zero balance is not a holding
    assert c1["balance_on"] == AS_OF
    c2 = rows["C2"]
    assert c2["age_years"] is None
    assert c2["txn_count_30d"] == 0 and c2["txn_count_90d"] == 1
    assert c2["days_since_last_txn"] == 75
    assert float(c2["aum_cny"]) == 0.0  # nothing on the latest snapshot
    c4 = rows["C4"]
    assert c4["age_years"] == 46  # birthday today
    assert c4["txn_count_365d"] == 0 and float(c4["txn_amount_365d_cny"]) == 0
    assert c4["days_since_last_txn"] is None and c4["last_txn_on"] is None


def test_customer_features_without_optional_sources_leaves_columns_null(con):
    rows = _features(con, stg_customers=None, stg_balances=None)
    assert sorted(rows) == ["C1", "C2"]  # the population comes from transactions
    assert rows["C1"]["aum_cny"] is None and rows["C1"]["tenure_days"] is None
    assert rows["C1"]["txn_count_30d"] == 2


def _rfm_rows(con) -> dict[str, dict]:
    """rfm_scores over the test's `txns` and `features` tables, by customer."""
    relation = rfm_scores(
        con,
        stg_transactions="txns",
        customer_features="features",
        params=CONFIG.rfm_scores,
        as_of=AS_OF,
    )
    return {r["customer_id"]: r for r in relation.pl().iter_rows(named=True)}


def test_rfm_ties_share_a_score_and_inactive_customers_score_one(con):
    con.execute("""
        create table features as select * from (values
            ('A', 1), ('B', 1), ('C', 1), ('D', 1), ('E', 1), ('Z', NULL)
        ) t(customer_id, days_since_last_txn);
        create table txns as
        select 'X' || row_number() over () as transaction_id, customer_id,
               TIMESTAMP '2026-03-30 10:00:00' as transaction_at, amount_cny, 'debit' as direction
        from (values ('A', 10.0), ('B', 10.0), ('C', 10.0), ('C', 10.0), ('D', 10.0), ('D', 10.0),
                     ('D', 10.0), ('E', 10.0), ('E', 10.0), ('E', 10.0), ('E', 10.0))
             t(customer_id, amount_cny);
    """)
    rows = _rfm_rows(con)
    assert [rows[c]["frequency_score"] for c in "ABCDE"] == [1, 1, 3, 4, 5]
    assert [rows[c]["monetary_score"] for c in "ABCDE"] == [1, 1, 3, 4, 5]
    assert {rows[c]["recency_score"] for c in "ABCDE"} == {1}  # all tied
    z = rows["Z"]
    assert (z["recency_score"], z["frequency_score"], z["monetary_score"]) == (1, 1, 1)
    assert z["frequency_txns"] == 0 and z["rfm_segment"] == "lost"
    assert z["rfm_segment_name_zh"] == "流失客户"
    assert rows["E"]["rfm_cell"] == "155"
    assert rows["E"]["rfm_segment"] == "cannot_lose"  # R=1, F=5: a big customer gone quiet
    codes = {r.code for r in CONFIG.rfm_scores.segments}
    assert {r["rfm_segment"] for r in rows.values()} <= codes


def test_rfm_segment_follows_the_first_matching_rule(con):
    con.execute("""
        create table features as
        select 'C' || i as customer_id, 30 - i as days_since_last_txn from range(10) t(i);
        create table txns as
        select 'T' || i || '_' || j as transaction_id, 'C' || i as customer_id,
               TIMESTAMP '2026-03-31 00:00:00' - to_days(30 - i) as transaction_at,
               100.0 as amount_cny, 'debit' as direction
        from range(10) a(i), range(10) b(j) where j <= i;
    """)
    rows = _rfm_rows(con)
    best = rows["C9"]  # most recent, most frequent, highest value
    assert best["rfm_cell"] == "555" and best["rfm_segment"] == "champions"
    worst = rows["C0"]
    assert worst["rfm_cell"] == "111" and worst["rfm_segment"] == "lost"


def test_aum_tier_boundaries_and_private_banking(con):
    con.execute("""
        create table features as select * from (values
            ('A', 0.00), ('B', 499999.99), ('C', 500000.00), ('D', 2999999.99),
            ('E', 3000000.00), ('F', 10000000.00), ('G', NULL)
        ) t(customer_id, aum_cny)
    """)
    relation = aum_tiers(con, customer_features="features", params=CONFIG.aum_tiers, as_of=AS_OF)
    rows = {r["customer_id"]: r for r in relation.pl().iter_rows(named=True)}
    assert {c: rows[c]["aum_tier"] for c in rows} == {
        "A": "mass",
        "B": "mass",
        "C": "affluent",
        "D": "affluent",
        "E": "hnw",
        "F": "hnw",
    }
    assert [c for c in rows if rows[c]["is_private_banking"]] == ["F"]
    assert rows["C"]["aum_tier_name_zh"] == "潜力客户"
    assert "G" not in rows  # no balances: no tier is invented
