"""Golden tests for customer_features: every group on hand-written rows with the edge cases
(window boundaries, rows after as_of, zero balances, loans, expired questionnaires)."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.config import load_config
from tests.conftest import DEFAULT_CONFIG
from transforms.customer_features import customer_features
from transforms.scratch import drop_scratch

AS_OF = date(2026, 3, 31)
CONFIG = load_config(DEFAULT_CONFIG, environ={})


@pytest.fixture
def con():
    return golden_bank(duckdb.connect())


def golden_bank(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The hand-written staged tables of these tests."""
    con.execute("""
        create table stg_customers as select * from (values
            ('C1', DATE '1990-04-01', DATE '2026-03-01', 'M', 'salaried', 'single', 0,
             'Shanghai', 'B_100k_300k', 700),
            ('C2', NULL, DATE '2020-01-01', 'F', 'retired', 'widowed', 2, 'Beijing', NULL, 640),
            ('C3', DATE '1970-01-01', DATE '2026-04-15', 'F', 'salaried', 'married', 1,
             'Shanghai', 'A_lt_100k', 600),
            ('C4', DATE '1980-03-31', DATE '2010-01-01', 'M', 'business_owner', 'married', 1,
             'Shenzhen', 'D_gt_1m', 810)
        ) t(customer_id, birth_on, opened_on, gender, occupation, marital_status, children_count,
            city, income_band, credit_score);
        create table stg_transactions as select * from (values
            ('T1', 'C1', TIMESTAMP '2026-03-31 23:59:59', 10.00, 'debit', 'mobile', 'shopping',
             'DEP'),                                                        -- on as_of
            ('T2', 'C1', TIMESTAMP '2026-03-02 00:00:00', 20.00, 'credit', 'online', 'salary',
             'DEP'),                                                        -- day 29: in 30d
            ('T3', 'C1', TIMESTAMP '2026-03-01 12:00:00', 40.00, 'debit', 'branch', 'shopping',
             'DEP'),                                                        -- day 30: not in 30d
            ('T4', 'C1', TIMESTAMP '2025-03-31 08:00:00', 80.00, 'debit', 'atm', 'cash', 'DEP'),
                                                                            -- day 365: out
            ('T5', 'C1', TIMESTAMP '2026-04-01 00:00:00', 160.00, 'debit', 'mobile', 'shopping',
             'DEP'),                                                        -- after as_of
            ('T6', 'C2', TIMESTAMP '2026-01-15 09:00:00', 300.00, 'credit', 'branch', 'pension',
             'DEP'),
            ('T7', 'C1', TIMESTAMP '2026-02-10 02:00:00', 5000.00, 'credit', 'online', 'salary',
             'DEP'),                                                        -- second salary month
            ('T8', 'C4', TIMESTAMP '2025-11-15 10:00:00', 1000.00, 'credit', 'online',
             'business_income', 'DEP'),                                     -- previous trend window
            ('T9', 'C4', TIMESTAMP '2026-03-20 10:00:00', 20000.00, 'debit', 'online',
             'investment', 'FUND'),                                         -- a risk purchase
            ('T10', 'C4', TIMESTAMP '2026-03-25 10:00:00', 7000.00, 'debit', 'mobile',
             'transfer_out', 'DEP')
        ) t(transaction_id, customer_id, transaction_at, amount_cny, direction, channel, category,
            product_id);
        create table stg_products as select * from (values
            ('DEP', 'deposit', 'R1', 'asset', 'current_account'),
            ('FUND', 'fund', 'R4', 'asset', 'equity_fund'),
            ('LOAN', 'loan', 'R1', 'liability', 'mortgage'),
            ('BIZ', 'loan', 'R1', 'liability', 'business_loan')
        ) t(product_id, product_family, risk_level, balance_type, product_type);
        create table stg_balances as select * from (values
            ('C1', 'DEP',  DATE '2026-03-31', 1000.00),
            ('C1', 'FUND', DATE '2026-03-31', 0.00),      -- a zero balance is not a holding
            ('C1', 'LOAN', DATE '2026-03-31', 5000.00),   -- a loan is not AUM
            ('C1', 'DEP',  DATE '2026-04-30', 9999.00),   -- after as_of
            ('C2', 'DEP',  DATE '2026-02-28', 200.00),    -- not on the latest snapshot
            ('C4', 'DEP',  DATE '2025-03-31', 500.00),    -- 12 months back
            ('C4', 'DEP',  DATE '2025-12-31', 2000.00),   -- 3 months back; covers Jan-Feb
            ('C4', 'DEP',  DATE '2026-02-28', 1000.00),
            ('C4', 'DEP',  DATE '2026-03-31', 600.00),
            ('C4', 'FUND', DATE '2026-03-31', 400.00),
            ('C4', 'BIZ',  DATE '2026-03-31', 1.00)
        ) t(customer_id, product_id, balance_on, balance_cny);
        create table stg_events as select * from (values
            ('E1', 'C1', TIMESTAMP '2026-03-30 08:00:00', 'login', NULL),
            ('E2', 'C1', TIMESTAMP '2026-03-15 08:00:00', 'page_view', 'mortgage_rates'),
            ('E3', 'C1', TIMESTAMP '2026-03-01 08:00:00', 'page_view', 'mortgage_rates'),
            ('E4', 'C1', TIMESTAMP '2026-02-01 08:00:00', 'enquiry', 'overseas_accounts'),
            ('E5', 'C2', TIMESTAMP '2026-03-31 08:00:00', 'complaint', 'service'),
            ('E6', 'C1', TIMESTAMP '2026-04-02 08:00:00', 'page_view', 'mortgage_rates')
        ) t(event_id, customer_id, event_at, event_type, topic);
        create table stg_questionnaires as select * from (values
            ('Q1', 'C1', DATE '2026-03-05', 'risk_assessment', 62, NULL),
            ('Q2', 'C1', DATE '2025-01-01', 'risk_assessment', 20, NULL),
            ('Q3', 'C2', DATE '2025-03-31', 'risk_assessment', 40, NULL),  -- exactly 12 months
            ('Q4', 'C1', DATE '2026-03-10', 'satisfaction', NULL, 9),
            ('Q5', 'C1', DATE '2026-04-05', 'risk_assessment', 90, NULL),  -- after as_of
            ('Q6', 'C4', DATE '2025-04-01', 'risk_assessment', 75, NULL)   -- a day short of 12m
        ) t(questionnaire_id, customer_id, answered_on, questionnaire_type, risk_score,
            nps_score);
    """)
    return con


SOURCES = ("customers", "balances", "products", "events", "questionnaires")


def features_relation(con, absent: tuple[str, ...] = ()) -> duckdb.DuckDBPyRelation:
    return customer_features(
        con,
        stg_transactions="stg_transactions",
        **{f"stg_{s}": None if s in absent else f"stg_{s}" for s in SOURCES},
        params=CONFIG.customer_features,
        as_of=AS_OF,
    )


def features(con, absent: tuple[str, ...] = ()) -> dict[str, dict]:
    relation = features_relation(con, absent)
    return {row["customer_id"]: row for row in relation.pl().iter_rows(named=True)}


def test_counts_are_published_as_bigint_and_money_as_decimal_whatever_the_parts_hold(con):
    """The parts hold counts in 32 bits and sums narrowed to the money type (less to spill);
    the published types are the contract and stay BIGINT and DECIMAL(18,2)."""
    for absent in ((), SOURCES):
        relation = features_relation(con, absent)
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        counted = ("txn_count", "inflow_count", "outflow_count", "products_")
        counted += ("logins", "enquiries", "complaints", "views")
        counts = [c for c in types if c.startswith(counted)]
        assert len(counts) == 78 and {types[c] for c in counts} == {"BIGINT"}, absent
        money = [c for c in types if c.endswith("_cny")]
        assert len(money) == 70 and {types[c] for c in money} == {"DECIMAL(18,2)"}, absent
        drop_scratch(con, "customer_features")


def test_population_and_demographics(con):
    rows = features(con)
    assert sorted(rows) == ["C1", "C2", "C4"]  # C3 opens after the as-of date
    assert rows["C1"]["age_years"] == 35  # birthday is tomorrow
    assert rows["C4"]["age_years"] == 46  # birthday today
    assert rows["C2"]["age_years"] is None
    assert rows["C1"]["tenure_days"] == 30
    assert rows["C4"]["occupation"] == "business_owner" and rows["C2"]["children_count"] == 2
    # extra attributes pass through unchanged, nulls included
    assert (rows["C4"]["city"], rows["C4"]["income_band"], rows["C4"]["credit_score"]) == (
        "Shenzhen",
        "D_gt_1m",
        810,
    )
    assert rows["C2"]["income_band"] is None


def test_transaction_windows_channels_categories_and_trend(con):
    c1, c2, c4 = (features(con)[c] for c in ("C1", "C2", "C4"))
    assert (c1["txn_count_30d"], c1["txn_count_90d"], c1["txn_count_365d"]) == (2, 4, 4)
    assert float(c1["txn_amount_30d_cny"]) == 30.0 and float(c1["avg_txn_30d_cny"]) == 15.0
    assert (c1["inflow_count_90d"], float(c1["inflow_90d_cny"])) == (2, 5020.0)
    assert (c1["outflow_count_90d"], float(c1["outflow_90d_cny"])) == (2, 50.0)
    assert c1["digital_share_30d"] == 1.0 and c1["digital_share_90d"] == 0.75
    assert c1["txn_count_mobile_30d"] == 1 and c1["txn_count_branch_30d"] == 0
    assert c1["txn_count_branch_90d"] == 1
    assert float(c1["amount_salary_90d_cny"]) == 5020.0
    assert float(c1["amount_cash_365d_cny"]) == 0.0  # day 365 is outside the window
    assert c1["days_since_last_txn"] == 0 and c1["last_txn_on"] == AS_OF
    assert c1["salary_credit_months_90d"] == 2 and c1["has_salary_inflow"] is True
    assert c1["txn_count_recent"] == 4 and c1["txn_count_previous"] == 0
    assert c1["activity_trend"] == 1.0
    assert c4["txn_count_recent"] == 2 and c4["txn_count_previous"] == 1
    assert c4["activity_trend"] == pytest.approx(1 / 3)
    assert float(c4["net_flow_recent_cny"]) == -27000.0
    assert float(c4["net_flow_previous_cny"]) == 1000.0
    assert float(c4["net_flow_trend_cny"]) == -28000.0
    assert float(c4["largest_outflow_30d_cny"]) == 20000.0
    assert float(c4["business_inflow_365d_cny"]) == 1000.0 and c4["has_salary_inflow"] is False
    # no transaction in any window: zero counts, null averages and shares
    assert c2["txn_count_30d"] == 0 and c2["avg_txn_30d_cny"] is None
    assert c2["digital_share_30d"] is None and c2["activity_trend"] == 1.0
    assert c2["days_since_last_txn"] == 75


def test_holdings_average_aum_changes_families_and_risk(con):
    c1, c2, c4 = (features(con)[c] for c in ("C1", "C2", "C4"))
    assert float(c1["aum_cny"]) == 1000.0 and float(c1["loan_balance_cny"]) == 5000.0
    assert c1["products_held"] == 2 and c1["balance_on"] == AS_OF
    # C1 opened on 1 March: only the periods since count (Feb 28 - Mar 30 at 0, Mar 31 at 1000)
    assert float(c1["aum_avg_cny"]) == pytest.approx(1000 / 32, abs=0.005)
    # C4: 2000 covers 1 Jan - 27 Feb (58 days), 1000 covers 28 Feb - 30 Mar (31), 1000 on 31 Mar
    assert float(c4["aum_avg_cny"]) == pytest.approx((2000 * 58 + 1000 * 31 + 1000) / 90, abs=0.005)
    assert float(c4["aum_3m_ago_cny"]) == 2000.0 and float(c4["aum_12m_ago_cny"]) == 500.0
    assert float(c4["aum_change_3m_cny"]) == -1000.0 and c4["aum_change_3m_pct"] == -0.5
    assert c4["aum_change_12m_pct"] == 1.0
    assert (c4["products_held"], c4["products_deposit"], c4["products_fund"]) == (3, 1, 1)
    assert c4["products_loan"] == 1 and c4["products_card"] == 0
    assert c4["product_families_held"] == 3 and c4["non_payment_families_held"] == 2
    assert c4["highest_risk_level_held"] == "R4"
    assert c4["aum_share_r4"] == 0.4 and c4["aum_share_r1"] == 0.6 and c4["aum_share_r5"] == 0
    assert c4["risk_asset_share"] == 0.4
    assert float(c4["risk_purchases_90d_cny"]) == 20000.0 and c4["has_business_link"] is True
    assert float(c2["aum_cny"]) == 0.0 and c2["products_held"] == 0
    assert c2["aum_share_r1"] is None and c2["risk_asset_share"] is None  # no AUM, no shares
    assert float(c2["aum_avg_cny"]) == pytest.approx(200 * 31 / 90, abs=0.005)
    assert c1["aum_3m_ago_cny"] is None and c1["aum_change_3m_pct"] is None


def test_behaviour_and_questionnaires(con):
    c1, c2, c4 = (features(con)[c] for c in ("C1", "C2", "C4"))
    assert c1["logins_30d"] == 1 and c1["views_mortgage_rates_30d"] == 1
    assert c1["views_mortgage_rates_90d"] == 2  # the view on day 30 and after as_of excluded
    assert c1["enquiries_overseas_accounts_90d"] == 1 and c1["enquiries_30d"] == 0
    assert c1["days_since_last_login"] == 1 and c1["days_since_last_activity"] == 0
    assert c2["complaints_30d"] == 1 and c2["last_login_on"] is None
    assert c4["logins_90d"] == 0 and c4["last_event_on"] is None
    assert c4["days_since_last_activity"] == 6
    # the latest answer on or before as_of; one after it is not seen
    assert (c1["risk_score"], c1["risk_assessed_on"]) == (62, date(2026, 3, 5))
    assert c1["risk_assessment_expired"] is False and c1["nps_score"] == 9
    assert c2["risk_assessment_expired"] is True  # exactly 12 months old
    assert c4["risk_assessment_expired"] is False and c4["risk_assessment_age_days"] == 364
    assert c4["nps_score"] is None


def test_absent_sources_leave_their_groups_null_not_zero(con):
    rows = features(con, absent=SOURCES)
    assert sorted(rows) == ["C1", "C2", "C4"]  # the population comes from transactions
    c1 = rows["C1"]
    assert c1["txn_count_30d"] == 2  # transactions are still counted
    for column in (
        "aum_cny",
        "aum_avg_cny",
        "products_held",
        "tenure_days",
        "city",
        "logins_30d",
        "views_mortgage_rates_30d",
        "risk_score",
        "products_fund",
    ):
        assert c1[column] is None, column


def test_no_extra_attributes_configured_means_no_extra_columns(con):
    params = CONFIG.customer_features.model_copy(update={"extra_attributes": []})
    relation = customer_features(
        con,
        stg_transactions="stg_transactions",
        **{f"stg_{s}": f"stg_{s}" for s in SOURCES},
        params=params,
        as_of=AS_OF,
    )
    assert "income_band" not in relation.columns and "aum_avg_cny" in relation.columns


def test_a_bank_that_outgrows_the_memory_limit_gets_the_same_features(tmp_path):
    """The golden customers copied 60,000 times (180,000 in the population): under a 256MB
    DuckDB memory limit the stage spills and returns exactly the rows it returns with memory
    to spare, and every copy has its original's features. (The single 11-way join it replaced
    failed here with an out-of-memory error below 512MB instead of spilling.)"""
    con = golden_bank(duckdb.connect())
    for table in ("customers", "transactions", "balances", "events", "questionnaires"):
        con.execute(
            f"create or replace table stg_{table} as "
            f"select t.* replace (t.customer_id || '_' || copy as customer_id) "
            f"from stg_{table} t, range(60000) copies(copy)"
        )
    con.execute(f"set threads = 2; set temp_directory = '{tmp_path}'")

    def build(table: str) -> None:
        customer_features(
            con,
            stg_transactions="stg_transactions",
            **{f"stg_{s}": f"stg_{s}" for s in SOURCES},
            params=CONFIG.customer_features,
            as_of=AS_OF,
        ).to_table(table)
        assert drop_scratch(con, "customer_features")  # its parts, dropped once it is built

    build("roomy")
    con.execute("set memory_limit = '256MB'")
    build("constrained")
    con.execute("reset memory_limit")

    assert con.execute("select count(*) from constrained").fetchall() == [(180_000,)]
    differing = con.execute(
        "select count(*) from ((from roomy except all from constrained) "
        "union all (from constrained except all from roomy))"
    ).fetchall()[0][0]
    assert differing == 0
    # the rows come in customer_id order
    assert con.execute(
        "select bool_and(customer_id > previous) from (select customer_id, "
        "lag(customer_id) over () as previous from constrained) where previous is not null"
    ).fetchall() == [(True,)]
    # each original customer's copies agree on every feature
    originals = con.execute(
        "select distinct split_part(customer_id, '_', 1) as original, "
        "columns(* exclude (customer_id)) from constrained order by original"
    ).fetchall()
    assert [row[0] for row in originals] == ["C1", "C2", "C4"]
    assert not con.execute(
        "select * from duckdb_tables() where starts_with(table_name, 'customer_features__')"
    ).fetchall()


def test_short_windows_still_read_a_year_for_the_yearly_business_inflow(con):
    """business_inflow_365d reads 365 days whatever the windows: with one 30-day window and a
    30-day trend, C4's business income 136 days back still counts (the lookback is the longest
    window any aggregate reads, no longer the configured windows alone)."""
    params = CONFIG.customer_features.model_copy(
        update={"windows_days": [30], "trend_window_days": 30}
    )
    relation = customer_features(
        con,
        stg_transactions="stg_transactions",
        **{f"stg_{s}": f"stg_{s}" for s in SOURCES},
        params=params,
        as_of=AS_OF,
    )
    rows = {row["customer_id"]: row for row in relation.pl().iter_rows(named=True)}
    assert float(rows["C4"]["business_inflow_365d_cny"]) == 1000.0
    assert "txn_count_90d" not in relation.columns and rows["C4"]["txn_count_30d"] == 2
