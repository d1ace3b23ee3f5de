"""Point-in-time training data for the models: past snapshot dates and the features as they
were on them. customer_features filters every source by its business date, so recomputing it
for an earlier date from today's staging sees nothing dated after that date."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb

from pipeline.config import CustomerFeaturesParams
from transforms.customer_features import customer_features

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
    """customer_features as of `snapshot`, materialised in the temp table `table`."""
    relation = customer_features(
        con, stg_transactions=stg_transactions, **sources, params=params, as_of=snapshot
    )
    con.execute(f"drop table if exists {table}")
    relation.to_table(table)
    return table


def holdings_on(stg_balances: str, day: str) -> str:
    """SQL: (customer_id, product_id) held with a positive balance on the latest balance date
    on or before the SQL date expression `day`."""
    return f"""
        select distinct customer_id, product_id from {stg_balances}
        where balance_on = (select max(balance_on) from {stg_balances} where balance_on <= {day})
          and balance_cny > 0"""
