"""Point-in-time training data for the models: past snapshot dates and the features as they
were on them. customer_features filters every source by its business date, so recomputing it
for an earlier date from today's staging sees nothing dated after that date."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl

from pipeline.config import CustomerFeaturesParams
from transforms.customer_features import customer_features
from transforms.scratch import drop_scratch, materialise

SOURCES = ("stg_customers", "stg_balances", "stg_products", "stg_events", "stg_questionnaires")


def feature_sources(
    stg_customers: str | None,
    stg_balances: str | None,
    stg_products: str | None,
    stg_events: str | None,
    stg_questionnaires: str | None,
) -> dict[str, str | None]:
    """The optional staged inputs of customer_features, by parameter name, for features_at."""
    return dict(
        zip(
            SOURCES,
            (stg_customers, stg_balances, stg_products, stg_events, stg_questionnaires),
            strict=True,
        )
    )


def feature_matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """The features as a writable float64 array, one row per customer in row-major order (the
    trees read a row's features together: 12% faster scoring than polars' column-major
    array), nulls as nan."""
    return np.array(frame.select(pl.col(features).cast(pl.Float64)).to_numpy(), order="C")


SCORING_BATCH_ROWS = 122_880  # DuckDB's largest Arrow batch


def scoring_batches(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    features: list[str],
) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
    """The rows of `sql` in order, SCORING_BATCH_ROWS at a time, each as (frame,
    feature_matrix): scoring holds one batch's features in memory, not the whole bank's. The
    query streams: run nothing else on `con` until the batches are exhausted."""
    for batch in con.sql(sql).to_arrow_reader(SCORING_BATCH_ROWS):
        frame = pl.from_arrow(batch)
        yield frame, feature_matrix(frame, features)


def seeded_order(seed: int, *keys: str) -> str:
    """SQL ORDER BY terms that shuffle rows by a seeded hash of `keys` (ties broken by the keys):
    the first n rows in this order are a random sample that is the same on every run with the
    same seed and DuckDB version."""
    return ", ".join([f"hash({int(seed)}, {', '.join(keys)})", *keys])


@contextmanager
def training_sample(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    sources: dict[str, str | None],
    customers: int | None,
    seed: int,
    name: str,
) -> Iterator[tuple[str, dict[str, str | None]]]:
    """The staged inputs narrowed to a seeded sample of `customers` customers, as scratch tables
    named after `name` that live while the `with` block runs: yields (stg_transactions,
    sources) to pass to features_at. Every input with a customer_id keeps only the sample's
    rows (read once here, so each snapshot reads the sample's rows only); products pass
    through. The sample is chosen by seeded_order, so the same seed picks the same customers on
    every run. With `customers` null, or at least the customers there are, the inputs are
    yielded unchanged."""
    universe = sources["stg_customers"] or stg_transactions
    if (
        customers is None
        or con.execute(
            f"select count(distinct customer_id) <= $n from {universe}", {"n": customers}
        ).fetchone()[0]
    ):
        yield stg_transactions, sources
        return
    materialise(
        con,
        f"{name}_customers",
        f"""
        select customer_id from (select distinct customer_id from {universe})
        order by {seeded_order(seed, "customer_id")} limit $n
        """,
        {"n": customers},
    )
    created = [f"{name}_customers"]

    def narrowed(table: str | None, source: str) -> str | None:
        if table is None or source == "stg_products":
            return table
        created.append(f"{name}_{source}")
        materialise(
            con,
            created[-1],
            f"select * from {table} semi join {name}_customers using (customer_id)",
        )
        return created[-1]

    try:
        yield (
            narrowed(stg_transactions, "stg_transactions"),
            {source: narrowed(table, source) for source, table in sources.items()},
        )
    finally:
        for table in created:
            con.execute(f"drop table if exists {table}")


def month_end_snapshots(as_of: date, horizon_days: int, count: int) -> list[date]:
    """The `count` latest month-ends whose horizon has passed by as_of, oldest first."""
    latest = as_of - timedelta(days=horizon_days)
    month_end = (
        latest
        if (latest + timedelta(days=1)).day == 1
        else latest.replace(day=1) - timedelta(days=1)
    )
    dates = [month_end]
    while len(dates) < count:
        dates.append(dates[-1].replace(day=1) - timedelta(days=1))
    return sorted(dates)


def features_at(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    sources: dict[str, str | None],
    params: CustomerFeaturesParams,
    snapshot: date,
    table: str,
) -> str:
    """customer_features as of `snapshot`, materialised in the table `table`."""
    relation = customer_features(
        con, stg_transactions=stg_transactions, **sources, params=params, as_of=snapshot
    )
    con.execute(f"drop table if exists {table}")
    relation.to_table(table)
    drop_scratch(con, "customer_features")
    return table


def holdings_on(stg_balances: str, day: str) -> str:
    """SQL: (customer_id, product_id) held with a positive balance on the latest balance date
    on or before the SQL date expression `day`."""
    return f"""
        select distinct customer_id, product_id from {stg_balances}
        where balance_on = (select max(balance_on) from {stg_balances} where balance_on <= {day})
          and balance_cny > 0"""
