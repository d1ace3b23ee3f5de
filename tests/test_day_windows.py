"""day_windows: per-customer aggregates over day windows, by polars over rows sorted in DuckDB,
equal to the same aggregates as one SQL GROUP BY (the plain reference)."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from pipeline.engine import connect
from pipeline.ingest import register_staged_views
from transforms.customer_features import customer_features
from transforms.day_windows import WindowAggregate, aggregate_windows, plain_aggregates
from transforms.scratch import drop_scratch

CREDIT, DEBIT = ("is_credit", (True,)), ("is_credit", (False,))
AGGREGATES = [
    WindowAggregate("rows_30d", "count", (0, 30)),
    WindowAggregate("rows_90d", "count", (0, 90)),
    WindowAggregate("rows_30_to_90d", "count", (30, 90)),
    WindowAggregate("credits_90d", "count", (0, 90), (CREDIT,)),
    WindowAggregate("mobile_or_online_90d", "count", (0, 90), (("channel", ("mobile", "online")),)),
    WindowAggregate("branch_shopping_90d", "count", (0, 90), (("channel", ("branch",)),
                                                              ("category", ("shopping",)))),
    WindowAggregate("amount_90d", "sum", (0, 90), value="amount_cny"),
    WindowAggregate("debits_30_to_90d", "sum", (30, 90), (DEBIT,), value="amount_cny"),
    WindowAggregate("largest_debit_90d", "max", (0, 90), (DEBIT,), value="amount_cny"),
    WindowAggregate("salary_365d", "sum", (0, 365), (("category", ("salary",)),),
                    value="amount_cny"),
    WindowAggregate("latest_366d", "latest", (0, 366)),
    WindowAggregate("latest_debit_30_to_90d", "latest", (30, 90), (DEBIT,)),
]  # fmt: skip

# (customer_id, days_ago, amount_cny, is_credit, channel, category); C2 has no rows, X9 is
# not in the population, C5's rows are all older than any window.
ROWS = [
    ("C1", 0, "10.05", True, "mobile", "salary"),
    ("C1", 29, "20.10", False, "branch", "shopping"),
    ("C1", 30, "-5.00", False, "online", "shopping"),  # first day of the 30..90 window
    ("C1", 89, "7.25", None, None, None),  # direction and channel unknown: counted, no filter
    ("C1", 90, "1000.00", True, "mobile", "salary"),  # outside every 90-day window
    ("C1", 364, "3.00", True, "fax", "salary"),  # a channel no filter names
    ("C3", 5, "999999999999.99", False, "branch", "shopping"),
    ("C3", 6, "0.01", False, "branch", "shopping"),
    ("C4", 60, "42.00", False, "atm", "cash"),
    ("C5", 400, "1.00", True, "mobile", "salary"),
    ("X9", 1, "5.00", True, "mobile", "salary"),
]


def bank(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute(
        "create temp table population as select * from (values ('C1'), ('C2'), ('C3'), "
        "('C4'), ('C5')) t(customer_id) order by customer_id"
    )
    con.execute(
        "create table day_rows (customer_id varchar, days_ago integer, "
        "amount_cny decimal(18, 2), is_credit boolean, channel varchar, category varchar)"
    )
    con.executemany("insert into day_rows values (?, ?, ?, ?, ?, ?)", ROWS)
    return con


def by_polars(con, slice_customers: int, monkeypatch) -> list[tuple]:
    monkeypatch.setattr("transforms.day_windows.SLICE_CUSTOMERS", slice_customers)
    aggregate_windows(
        con,
        target="fast",
        population="population",
        rows="select * from day_rows where days_ago < $lookback",
        parameters={"lookback": 366},
        aggregates=AGGREGATES,
    )
    return con.execute("select * from fast").fetchall()


def by_sql(con) -> list[tuple]:
    return con.execute(
        f"select customer_id, {plain_aggregates(AGGREGATES)} "
        "from population left join (select * from day_rows where days_ago < 366) "
        "using (customer_id) group by customer_id order by customer_id"
    ).fetchall()


@pytest.mark.parametrize("slice_customers", [1, 2, 250_000])
def test_polars_equals_the_plain_group_by_on_edge_rows(monkeypatch, slice_customers):
    con = bank(duckdb.connect())
    fast = by_polars(con, slice_customers, monkeypatch)
    assert fast == by_sql(con)
    columns = ["customer_id", *(a.name for a in AGGREGATES)]
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in fast}
    assert list(rows) == ["C1", "C2", "C3", "C4", "C5"]  # the population's order; X9 dropped
    c1 = rows["C1"]
    assert (c1["rows_30d"], c1["rows_90d"], c1["rows_30_to_90d"]) == (2, 4, 2)
    assert c1["credits_90d"] == 1 and c1["mobile_or_online_90d"] == 2
    assert c1["branch_shopping_90d"] == 1
    assert str(c1["amount_90d"]) == "32.40"  # 10.05 + 20.10 - 5.00 + 7.25, exact
    assert str(c1["debits_30_to_90d"]) == "-5.00"
    assert str(c1["largest_debit_90d"]) == "20.10"
    assert str(c1["salary_365d"]) == "1013.05"  # the fax row's category still counts
    assert str(rows["C3"]["amount_90d"]) == "1000000000000.00"  # cents do not overflow
    assert rows["C4"]["largest_debit_90d"] is not None and rows["C4"]["rows_30d"] == 0
    # latest: the smallest days_ago among the matching rows
    assert c1["latest_366d"] == 0 and c1["latest_debit_30_to_90d"] == 30
    assert rows["C3"]["latest_366d"] == 5 and rows["C3"]["latest_debit_30_to_90d"] is None
    assert rows["C4"]["latest_debit_30_to_90d"] == 60
    # no rows, or none in any window: counts and sums 0, maxima null
    for customer in ("C2", "C5"):
        assert rows[customer]["rows_90d"] == 0 and str(rows[customer]["amount_90d"]) == "0.00"
        assert rows[customer]["largest_debit_90d"] is None
        assert rows[customer]["latest_366d"] is None
    assert not con.execute(
        "select * from duckdb_tables() where table_name = 'fast_rows'"
    ).fetchall()  # the sorted rows are dropped


def test_the_output_types_are_integer_counts_and_decimal_money(monkeypatch):
    con = bank(duckdb.connect())
    by_polars(con, 2, monkeypatch)
    types = dict(con.execute("select column_name, column_type from (describe fast)").fetchall())
    assert types["rows_30d"] == "INTEGER" and types["amount_90d"] == "DECIMAL(18,2)"
    assert types["largest_debit_90d"] == "DECIMAL(18,2)" and types["latest_366d"] == "INTEGER"


def test_a_count_takes_no_value_and_a_sum_needs_one():
    with pytest.raises(ValueError, match="needs one"):
        WindowAggregate("total", "sum", (0, 30))
    with pytest.raises(ValueError, match="takes no value"):
        WindowAggregate("rows", "count", (0, 30), value="amount_cny")
    with pytest.raises(ValueError, match="takes no value"):
        WindowAggregate("last", "latest", (0, 30), value="amount_cny")


def test_customer_features_by_polars_equal_the_plain_group_by_on_the_sample_bank(
    small_bank, monkeypatch
):
    """Every customer_features column, on the generated bank, in slices of 97 customers."""
    monkeypatch.setattr("transforms.day_windows.SLICE_CUSTOMERS", 97)
    config, _, _ = small_bank
    as_of: date = config.generate.end_on
    con = connect(config)
    present = register_staged_views(con, config.paths.staging, as_of)
    tables = {}
    for plain in (True, False):
        relation = customer_features(
            con,
            **{f"stg_{s}": f"stg_{s}" if s in present else None for s in (
                "transactions", "customers", "balances", "products", "events", "questionnaires"
            )},
            params=config.customer_features,
            as_of=as_of,
            plain_windows=plain,
        )  # fmt: skip
        tables[plain] = f"features_{'plain' if plain else 'fast'}"
        relation.to_table(tables[plain])
        drop_scratch(con, "customer_features")
    plain, fast = tables[True], tables[False]
    assert con.execute(f"select count(*) from {fast}").fetchall()[0][0] > 500
    assert con.execute(f"select sum(txn_count_365d) from {fast}").fetchall()[0][0] > 0
    differing = con.execute(
        f"select count(*) from ((from {plain} except all from {fast}) "
        f"union all (from {fast} except all from {plain}))"
    ).fetchall()[0][0]
    assert differing == 0
    assert (
        con.execute(f"select customer_id from {plain}").fetchall()
        == con.execute(f"select customer_id from {fast}").fetchall()
    )
    # the last transaction, event and login: in the windows' lookback or before it, the latest
    # of all rows up to as_of
    last = con.execute(
        f"""
        select count(*), count(*) filter (where f.last_txn_on < $as_of - 365),
               count(*) filter (where f.last_login_on < $as_of - 90),
               count(*) filter (where f.last_txn_on is distinct from t.last_txn_on
                                or f.last_event_on is distinct from e.last_event_on
                                or f.last_login_on is distinct from e.last_login_on)
        from {fast} f
        left join (select customer_id, max(transaction_at)::date as last_txn_on
                   from stg_transactions group by all) t using (customer_id)
        left join (select customer_id, max(event_at)::date as last_event_on,
                          max(event_at) filter (where event_type = 'login')::date as last_login_on
                   from stg_events group by all) e using (customer_id)
        """,
        {"as_of": as_of},
    ).fetchall()[0]
    assert last[1] > 0 and last[2] > 0, last  # some from before the lookback
    assert last[3] == 0, last
