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

The fits are saved as an artifact and reused until retrain_every_days have passed (population
parameters move slowly; nightly runs in between score today's x, t_x and T with them).

Also writes model_fits rows: model bg_nbd (r, alpha, a, b with standard errors, log-likelihood,
customers) and gamma_gamma (p, q, gamma ...), plus the holdout check made when they were fitted:
BG/NBD fitted on the window ending holdout_days before, its predicted transactions since then
against the actual ones (totals, mean absolute error per customer, correlation); trained_on
tells the fit's date.

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
from pipeline.artifacts import StageContext, settings_hash
from pipeline.config import ClvParams
from pipeline.errors import InputError
from pipeline.expectations import Check, between
from transforms.model_fits import MODEL_FITS, fit_rows
from transforms.scratch import materialise, scratch_table
from transforms.staging import literal

DAYS = scratch_table("clv_estimates", "days")  # per customer, each day with a transaction


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
    # two steps, each one operator that spills on its own (as one query with the days as a
    # CTE read twice, it failed to pin memory at 5M customers under a 2 GB limit): the
    # transaction days, then one pass over them per customer for both windows
    materialise(
        con,
        DAYS,
        f"""
        select customer_id, transaction_at::date as day, sum(amount_cny) as value
        from {stg_transactions}
        where transaction_at::date >= $start
          and transaction_at::date <= coalesce($holdout_end, $end)
          and coalesce(category, '') not in ({passive})
        group by all
        """,
        {"start": start, "end": end, "holdout_end": holdout_end},
    )
    summary = con.sql(
        f"""
        select customer_id, x::double as x,
               (last_day - first_day) / {unit} as t_x,
               ($end - first_day + 1) / {unit} as age,
               repeat_mean_value::double as repeat_mean_value,
               holdout_transactions::double as holdout_transactions
        from (
            select customer_id,
                   count(*) filter (where day <= $end) - 1 as x,
                   min(day) filter (where day <= $end) as first_day,
                   max(day) filter (where day <= $end) as last_day,
                   (sum(value) filter (where day <= $end)
                    - arg_min(value, day) filter (where day <= $end))
                       / nullif(count(*) filter (where day <= $end) - 1, 0) as repeat_mean_value,
                   count(*) filter (where day > $end) as holdout_transactions
            from {DAYS}
            group by customer_id
            having count(*) filter (where day <= $end) > 0
        )
        order by customer_id
        """,
        params={"end": end},
    ).pl()
    con.execute(f"drop table {DAYS}")
    return summary


# bump when the saved fits or their metadata change shape: older artifacts are then not reused
ARTIFACT_FORMAT = 1
MODELLED = scratch_table("clv_estimates", "modelled")  # the fitted figures per customer


def _fit(con, stg_transactions, summary: pl.DataFrame, params: ClvParams, as_of, context):
    """Fit BG/NBD and Gamma-Gamma on `summary` (the calibration window ending as_of), and the
    holdout check: BG/NBD refitted on the window ending holdout_days earlier, its predicted
    transactions since then against the actual ones. Saved as an artifact."""
    unit_days = 7.0 if params.time_unit == "weeks" else 1.0
    start = as_of - timedelta(days=params.calibration_days - 1)
    holdout_start = as_of - timedelta(days=params.holdout_days)
    past = purchase_summary(
        con,
        stg_transactions,
        params,
        start - timedelta(days=params.holdout_days),
        holdout_start,
        holdout_end=as_of,
    )
    try:
        past_x, past_t_x, past_age = (past[c].to_numpy() for c in ("x", "t_x", "age"))
        past_bgnbd = fit_bgnbd(past_x, past_t_x, past_age, params.min_repeat_customers)
        x, t_x, age = (summary[c].to_numpy() for c in ("x", "t_x", "age"))
        bgnbd = fit_bgnbd(x, t_x, age, params.min_repeat_customers)
        value = summary["repeat_mean_value"].fill_null(0).to_numpy()
        gamma_gamma = fit_gamma_gamma(x, value, params.min_repeat_customers)
    except ClvFitError as error:
        raise InputError(f"clv_estimates: the data cannot support the fit: {error}") from None
    predicted = bgnbd_expected_transactions(
        past_bgnbd.vector(), params.holdout_days / unit_days, past_x, past_t_x, past_age
    )
    actual = past["holdout_transactions"].to_numpy()
    correlation = float(np.corrcoef(predicted, actual)[0, 1]) if len(actual) > 1 else None
    context.info(
        f"    clv_estimates: holdout {params.holdout_days} d predicted {predicted.sum():,.0f} "
        f"transactions, actual {actual.sum():,.0f}"
    )
    metadata = {
        "trained_on": as_of.isoformat(),
        "config_hash": settings_hash(ARTIFACT_FORMAT, params),
        "training_from": start.isoformat(),
        "training_to": as_of.isoformat(),
        "holdout": {
            "holdout_days": params.holdout_days,
            "holdout_predicted_transactions": float(predicted.sum()),
            "holdout_actual_transactions": float(actual.sum()),
            "holdout_mae_per_customer": float(np.abs(predicted - actual).mean()),
            "holdout_correlation": correlation,
        },
    }
    fits = {"bg_nbd": bgnbd, "gamma_gamma": gamma_gamma}
    return context.artifacts.save(f"{as_of.isoformat()}-{metadata['config_hash']}", fits, metadata)


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
    summary = purchase_summary(con, stg_transactions, params, start, as_of)
    artifact = context.artifacts.reusable(
        as_of, settings_hash(ARTIFACT_FORMAT, params), params.retrain_every_days
    )
    if artifact is None:
        artifact = _fit(con, stg_transactions, summary, params, as_of, context)
    else:
        context.info(f"    clv_estimates: scoring with the fits of {artifact.version}")
    fits = artifact.load()
    bgnbd, gamma_gamma = fits["bg_nbd"], fits["gamma_gamma"]

    x, t_x, age = (summary[c].to_numpy() for c in ("x", "t_x", "age"))
    value = summary["repeat_mean_value"].fill_null(0).to_numpy()
    expected = bgnbd_expected_transactions(bgnbd.vector(), horizon, x, t_x, age)
    try:
        per_transaction = gamma_gamma_expected_value(gamma_gamma.vector(), x, value)
    except ClvFitError as error:
        raise InputError(f"clv_estimates: the data cannot support the fit: {error}") from None
    modelled = summary.with_columns(
        p_alive=pl.Series(bgnbd_p_alive(bgnbd.vector(), x, t_x, age)),
        expected_transactions=pl.Series(expected),
        expected_value_cny=pl.Series(per_transaction).round(2),
        clv_cny=pl.Series(expected * per_transaction).round(2),
    )
    con.register(MODELLED, modelled.to_arrow())
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
        left join {MODELLED} m using (customer_id)
        order by f.customer_id
        """,
        params={"as_of": as_of},
    )
    holdout_terms = [
        (term, "size" if term == "holdout_days" else "metric", value, None)
        for term, value in artifact.metadata["holdout"].items()
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
                training_from=date.fromisoformat(artifact.metadata["training_from"]),
                training_to=date.fromisoformat(artifact.metadata["training_to"]),
                trained_on=artifact.trained_on,
            )
            for fitted in (bgnbd, gamma_gamma)
        ]
    )
    return {"clv_estimates": estimates, MODEL_FITS: con.from_arrow(fits.to_arrow())}


def expectations(params: ClvParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [
        between("p_alive", 0, 1),
        between("expected_transactions", 0),
        between("clv_cny", 0),
    ]
