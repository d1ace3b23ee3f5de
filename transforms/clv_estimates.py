"""clv_estimates: expected transactions, P(alive) and lifetime value per customer.

Grain: one row per customer_id and as_of (every customer in customer_features).
    repeat_transactions      x: transaction days after the first, in the calibration window
    recency_units, age_units t_x and T in clv_estimates.time_unit (weeks by default)
    repeat_mean_value_cny    mean value of the repeat transaction days
    p_alive                  BG/NBD probability that the customer is still active
    expected_transactions    BG/NBD expectation over the next horizon_days
    expected_value_cny       Gamma-Gamma expected value of one transaction
    clv_cny                  expected_transactions x expected_value_cny: the value the customer
                             is expected to move over the horizon (undiscounted; a volume, not
                             the bank's margin)
    is_modelled              false for a customer without a customer-initiated transaction in
                             the calibration window (the model columns are then null)

Transactions: customer-initiated ones (categories outside passive_categories), each calendar day
counted once with its amounts summed, in the calibration_days before as_of (inclusive). A
customer's first transaction day in the window is his start.

Also writes model_fits rows: model bg_nbd (r, alpha, a, b with standard errors, log-likelihood,
customers) and gamma_gamma (p, q, gamma ...), plus the holdout check: the same model fitted on
the window ending holdout_days before as_of, its predicted transactions since then against the
actual ones (totals, mean absolute error per customer, correlation).

Checks: customer_id unique; p_alive within 0..1; expected values >= 0.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl

from models.clv import (
    ClvFitError,
    bgnbd_expected_transactions,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_value,
)
from pipeline.artifacts import StageContext
from pipeline.config import ClvParams
from pipeline.errors import InputError
from pipeline.expectations import Check, between
from transforms.model_fits import MODEL_FITS, fit_rows
from transforms.staging import literal


def purchase_summary(
    con: duckdb.DuckDBPyConnection,
    stg_transactions: str,
    params: ClvParams,
    start: date,
    end: date,
    holdout_end: date | None = None,
) -> pl.DataFrame:
    """Per customer with a transaction day in [start, end]: x, t_x, T (in the time unit), the
    repeat mean value, and the transaction days in (end, holdout_end] when given."""
    unit = 7.0 if params.time_unit == "weeks" else 1.0
    passive = ", ".join(literal(c) for c in params.passive_categories)
    return con.sql(
        f"""
        with days as (
            select customer_id, transaction_at::date as day, sum(amount_cny) as value
            from {stg_transactions}
            where transaction_at::date >= $start
              and transaction_at::date <= coalesce($holdout_end, $end)
              and coalesce(category, '') not in ({passive})
            group by all
        ),
        calibration as (
            select customer_id, count(*) - 1 as x, min(day) as first_day, max(day) as last_day,
                   (sum(value) - arg_min(value, day)) / nullif(count(*) - 1, 0)
                       as repeat_mean_value
            from days where day <= $end
            group by customer_id
        ),
        later as (
            select customer_id, count(*) as holdout_transactions
            from days where day > $end
            group by customer_id
        )
        select c.customer_id, c.x::double as x,
               (c.last_day - c.first_day) / {unit} as t_x,
               ($end - c.first_day + 1) / {unit} as age,
               c.repeat_mean_value::double as repeat_mean_value,
               coalesce(l.holdout_transactions, 0)::double as holdout_transactions
        from calibration c left join later l using (customer_id)
        order by c.customer_id
        """,
        params={"start": start, "end": end, "holdout_end": holdout_end},
    ).pl()


def _fit_both(summary: pl.DataFrame, params: ClvParams):
    x, t_x, age = (summary[c].to_numpy() for c in ("x", "t_x", "age"))
    bgnbd = fit_bgnbd(x, t_x, age, params.min_repeat_customers)
    value = summary["repeat_mean_value"].fill_null(0).to_numpy()
    gamma_gamma = fit_gamma_gamma(x, value, params.min_repeat_customers)
    return bgnbd, gamma_gamma


def clv_estimates(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    customer_features: str,
    params: ClvParams,
    as_of: date,
    context: StageContext,
) -> dict[str, duckdb.DuckDBPyRelation]:
    unit_days = 7.0 if params.time_unit == "weeks" else 1.0
    horizon = params.horizon_days / unit_days
    start = as_of - timedelta(days=params.calibration_days - 1)
    holdout_start = as_of - timedelta(days=params.holdout_days)
    try:
        # the holdout check: fit on the window ending holdout_days ago, score what happened since
        past = purchase_summary(
            con,
            stg_transactions,
            params,
            start - timedelta(days=params.holdout_days),
            holdout_start,
            holdout_end=as_of,
        )
        past_bgnbd, _ = _fit_both(past, params)
        predicted = bgnbd_expected_transactions(
            past_bgnbd.vector(),
            params.holdout_days / unit_days,
            *(past[c].to_numpy() for c in ("x", "t_x", "age")),
        )
        actual = past["holdout_transactions"].to_numpy()
        summary = purchase_summary(con, stg_transactions, params, start, as_of)
        bgnbd, gamma_gamma = _fit_both(summary, params)
    except ClvFitError as error:
        raise InputError(f"clv_estimates: the data cannot support the fit: {error}") from None

    x, t_x, age = (summary[c].to_numpy() for c in ("x", "t_x", "age"))
    value = summary["repeat_mean_value"].fill_null(0).to_numpy()
    expected = bgnbd_expected_transactions(bgnbd.vector(), horizon, x, t_x, age)
    per_transaction = gamma_gamma_expected_value(gamma_gamma.vector(), x, value)
    modelled = summary.with_columns(
        p_alive=pl.Series(bgnbd_p_alive(bgnbd.vector(), x, t_x, age)),
        expected_transactions=pl.Series(expected),
        expected_value_cny=pl.Series(per_transaction).round(2),
        clv_cny=pl.Series(expected * per_transaction).round(2),
    )
    con.register("clv_modelled", modelled.to_arrow())
    estimates = con.sql(
        f"""
        select f.customer_id, $as_of::date as as_of,
               m.x::bigint as repeat_transactions, m.t_x as recency_units, m.age as age_units,
               round(m.repeat_mean_value, 2)::decimal(18, 2) as repeat_mean_value_cny,
               m.p_alive, m.expected_transactions,
               m.expected_value_cny::decimal(18, 2) as expected_value_cny,
               m.clv_cny::decimal(18, 2) as clv_cny,
               m.customer_id is not null as is_modelled
        from {customer_features} f
        left join clv_modelled m using (customer_id)
        order by f.customer_id
        """,
        params={"as_of": as_of},
    )
    correlation = float(np.corrcoef(predicted, actual)[0, 1]) if len(actual) > 1 else None
    holdout_terms = [
        ("holdout_days", "size", params.holdout_days, None),
        ("holdout_predicted_transactions", "metric", float(predicted.sum()), None),
        ("holdout_actual_transactions", "metric", float(actual.sum()), None),
        ("holdout_mae_per_customer", "metric", float(np.abs(predicted - actual).mean()), None),
        ("holdout_correlation", "metric", correlation, None),
    ]
    fits = pl.concat(
        [
            fit_rows(
                as_of=as_of,
                stage="clv_estimates",
                model=fitted.model,
                terms=[
                    *[(n, "parameter", v, fitted.std_errors[n]) for n, v in fitted.params.items()],
                    ("log_likelihood", "metric", fitted.log_likelihood, None),
                    ("customers", "size", fitted.customers, None),
                    ("time_unit_days", "size", unit_days, None),
                    *(holdout_terms if fitted.model == "bg_nbd" else []),
                ],
                training_from=start,
                training_to=as_of,
            )
            for fitted in (bgnbd, gamma_gamma)
        ]
    )
    context.info(
        f"    clv_estimates: holdout {params.holdout_days} d predicted {predicted.sum():,.0f} "
        f"transactions, actual {actual.sum():,.0f}"
    )
    return {"clv_estimates": estimates, MODEL_FITS: con.from_arrow(fits.to_arrow())}


def expectations(params: ClvParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [
        between("p_alive", 0, 1),
        between("expected_transactions", 0),
        between("clv_cny", 0),
    ]
