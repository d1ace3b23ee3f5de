"""Golden tests for rfm_scores on tiny hand-written tables with the edge rows."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.config import load_config
from tests.conftest import DEFAULT_CONFIG
from transforms.rfm_scores import rfm_scores

AS_OF = date(2026, 3, 31)
CONFIG = load_config(DEFAULT_CONFIG, environ={})


@pytest.fixture
def con():
    return duckdb.connect()


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


def test_the_window_read_from_customer_features_equals_the_transactions_aggregate(small_bank):
    """With the RFM window among customer_features' windows the stage reads its count and
    amount from there: the same rows as aggregating the transactions again."""
    from pipeline.ingest import register_staged_views
    from pipeline.warehouse import partition_path

    config, _, _ = small_bank
    as_of = config.generate.end_on
    assert config.rfm_scores.window_days in config.customer_features.windows_days
    con = duckdb.connect()
    register_staged_views(con, config.paths.staging, as_of)
    features = partition_path(config.paths.warehouse, "customer_features", as_of)
    con.execute(f"create view features as from read_parquet('{features}')")

    def scores(**features_params):
        return rfm_scores(
            con,
            stg_transactions="stg_transactions",
            customer_features="features",
            params=config.rfm_scores,
            as_of=as_of,
            **features_params,
        )

    aggregated = scores().pl()
    read = scores(customer_features_params=config.customer_features).pl()
    assert aggregated.equals(read)
    assert aggregated.height == len(set(aggregated["customer_id"]))
    assert (aggregated["frequency_txns"] == 0).any() and (aggregated["frequency_txns"] > 0).any()
    assert aggregated["monetary_cny"].sum() > 0
    # another window than the features' is still aggregated from the transactions
    other = config.rfm_scores.model_copy(update={"window_days": 200})
    assert 200 not in config.customer_features.windows_days
    shorter = rfm_scores(
        con,
        stg_transactions="stg_transactions",
        customer_features="features",
        params=other,
        as_of=as_of,
        customer_features_params=config.customer_features,
    ).pl()
    assert shorter["frequency_txns"].sum() < aggregated["frequency_txns"].sum()
