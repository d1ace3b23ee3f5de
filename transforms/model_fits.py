"""model_fits: what every fitted model looked like, for analysts and auditors.

Grain: one row per as_of, model and term; each model stage writes its own file of the shared
table (model_fits/as_of=D/<stage>.parquet), so re-running one stage replaces only its rows.
    stage, model            the stage and the model it fitted (e.g. clv_estimates, bg_nbd)
    term, kind              a parameter, a metric (log-likelihood, AUC, ARI ...) or a size
    value, std_error        std_error where the method gives one (maximum likelihood)
    training_from, training_to   the window of data the model learnt from
    trained_on              the as-of date of the fit (earlier than as_of for a reused model)
"""

from __future__ import annotations

from datetime import date

import polars as pl

MODEL_FITS = "model_fits"
MODEL_FITS_KEY = ("as_of", "model", "term")

SCHEMA = {
    "as_of": pl.Date,
    "stage": pl.String,
    "model": pl.String,
    "term": pl.String,
    "kind": pl.String,
    "value": pl.Float64,
    "std_error": pl.Float64,
    "training_from": pl.Date,
    "training_to": pl.Date,
    "trained_on": pl.Date,
}


def fit_rows(
    *,
    as_of: date,
    stage: str,
    model: str,
    terms: list[tuple[str, str, float | None, float | None]],
    training_from: date | None,
    training_to: date | None,
    trained_on: date | None = None,
) -> pl.DataFrame:
    """terms: (term, kind, value, std_error), kind one of parameter / metric / size."""
    return pl.DataFrame(
        [
            {
                "as_of": as_of,
                "stage": stage,
                "model": model,
                "term": term,
                "kind": kind,
                "value": None if value is None else float(value),
                "std_error": None if std_error is None else float(std_error),
                "training_from": training_from,
                "training_to": training_to,
                "trained_on": trained_on or as_of,
            }
            for term, kind, value, std_error in terms
        ],
        schema=SCHEMA,
    )
