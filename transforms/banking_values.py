"""banking_values: what a customer is worth to the bank, from margins and expected tenure.

Grain: one row per customer_id and as_of (every customer in churn_scores).
    annual_margin_cny        sum over product families of balance_<family>_cny x the family's
                             annual margin (banking_values.margin_by_family)
    churn_probability        from churn_scores: P(churn within its horizon)
    expected_relationship_years   sum over the coming periods (one churn horizon each, up to
                             horizon_years) of the chance to still be a customer, (1 - p)^k,
                             times the period length: the expected remaining relationship
    banking_value_cny        the margin earned in each of those periods, discounted at
                             discount_rate a year, summed: the bank's expected value

A constant per-period churn hazard is assumed (the model predicts one horizon ahead); the
figures rank customers, they are not an accounting value.

Checks: customer_id unique; annual_margin_cny, banking_value_cny >= 0.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import BankingValueParams, ChurnParams
from pipeline.expectations import Check, between


def banking_values(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    churn_scores: str,
    params: BankingValueParams,
    churn_scores_params: ChurnParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    period_years = churn_scores_params.horizon_days / 365.25
    periods = max(1, round(params.horizon_years / period_years))
    margin = " + ".join(
        f"coalesce(f.balance_{family}_cny, 0) * {rate!r}"
        for family, rate in params.margin_by_family.items()
    )
    return con.sql(
        f"""
        with valued as (
            select f.customer_id, ({margin})::double as annual_margin, c.churn_probability,
                   1 - c.churn_probability as survival,
                   1 / power(1 + $discount, $period_years) as discount
            from {customer_features} f
            join {churn_scores} c using (customer_id)
        )
        select customer_id, $as_of::date as as_of,
               round(annual_margin, 2)::decimal(18, 2) as annual_margin_cny,
               churn_probability,
               -- geometric sums over k = 1..periods of survival^k (and x discount^k)
               $period_years * (
                   case when survival >= 1 then $periods
                        else survival * (1 - power(survival, $periods)) / (1 - survival) end
               ) as expected_relationship_years,
               round(annual_margin * $period_years * (
                   case when survival * discount >= 1 then $periods
                        else survival * discount * (1 - power(survival * discount, $periods))
                             / (1 - survival * discount) end
               ), 2)::decimal(18, 2) as banking_value_cny
        from valued
        order by customer_id
        """,
        params={
            "as_of": as_of,
            "discount": params.discount_rate,
            "period_years": period_years,
            "periods": periods,
        },
    )


def expectations(params: BankingValueParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [between("annual_margin_cny", 0), between("banking_value_cny", 0)]
