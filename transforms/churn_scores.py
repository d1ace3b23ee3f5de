"""churn_scores: the probability that a customer churns within the horizon, with reasons.

Grain: one row per customer_id and as_of (every customer in customer_features).
    churn_probability      calibrated probability of the churn label (below) within horizon_days
    churn_risk_band        the first of churn_scores.risk_bands whose cut-off it reaches
    reason_1..3            for the bands in reason_codes_for: the features pushing this customer's
                           probability up most, best first (null when none does)
    reason_1..3_value      the customer's value of that feature
    reason_1..3_contribution   how much the probability drops when that feature is set to the
                           training median
    reason_text            the three as one readable line
    model_version, trained_on   the artifact that scored (retrained every retrain_every_days)

The label, for a snapshot date T: within (T, T + horizon_days] AUM falls by at least
aum_drop_share (from the balance on T to the latest balance by T + horizon), or the customer
initiates nothing (no transaction outside passive_categories and no app/web/contact event).
Training examples are customers who initiated something in the horizon_days before T.

Training (when no saved model trained within retrain_every_days under the same settings):
month-end snapshots T whose horizon ended by as_of; customer_features recomputed at each T from
rows dated up to T only (the stages filter every source by date, so nothing after T leaks in),
for a seeded sample of training_customers customers, and at most max_training_rows /
training_snapshots eligible customers per snapshot (a seeded sample beyond that).
The oldest snapshots fit the gradient-boosted trees, the next one calibrates their
probabilities (isotonic), the newest test_snapshots are the out-of-time test against a
recency-only baseline. The model evaluated is the model saved and used.

Also writes model_fits rows (model churn_gbm): the out-of-time metrics of the model and of the
baseline (ROC AUC, PR AUC, lift in the top decile, calibration error), training and test sizes.

Checks: customer_id unique; churn_probability within 0..1; churn_risk_band in the band codes.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl

from models.churn import calibration_table, evaluate, fit_churn_model, lift_table
from pipeline.artifacts import StageContext, settings_hash
from pipeline.config import ChurnParams, CustomerFeaturesParams
from pipeline.errors import ConfigError, InputError
from pipeline.expectations import Check, between, in_set, not_null
from transforms.model_fits import MODEL_FITS, fit_rows
from transforms.snapshots import (
    feature_matrix,
    feature_sources,
    features_at,
    month_end_snapshots,
    scoring_batches,
    seeded_order,
    training_sample,
)
from transforms.staging import literal, quote


def snapshot_dates(as_of: date, params: ChurnParams) -> list[date]:
    """Month-ends whose horizon has passed by as_of, oldest first."""
    return month_end_snapshots(as_of, params.horizon_days, params.training_snapshots)


def churn_labels(
    con: duckdb.DuckDBPyConnection,
    features: str,
    *,
    stg_transactions: str,
    stg_balances: str | None,
    stg_products: str | None,
    stg_events: str | None,
    params: ChurnParams,
    snapshot: date,
) -> duckdb.DuckDBPyRelation:
    """(customer_id, is_eligible, is_churned) for the customers in `features` at `snapshot`."""
    passive = ", ".join(literal(c) for c in params.passive_categories)
    window = f"> $snapshot - {params.horizon_days} and {{d}} <= $snapshot"
    future = f"> $snapshot and {{d}} <= $snapshot + {params.horizon_days}"
    events = stg_events or "(select null::varchar as customer_id, null::timestamp as event_at)"

    def initiated(condition: str) -> str:
        return f"""
            select customer_id from {stg_transactions}
            where transaction_at::date {condition.format(d="transaction_at::date")}
              and coalesce(category, '') not in ({passive})
            union
            select customer_id from {events}
            where event_at::date {condition.format(d="event_at::date")}"""

    if stg_balances and stg_products:
        later_aum = f"""
            select b.customer_id,
                   sum(b.balance_cny) filter (where p.balance_type = 'asset') as aum_later
            from {stg_balances} b join {stg_products} p using (product_id)
            where b.balance_on = (select max(balance_on) from {stg_balances}
                                  where balance_on <= $snapshot + {params.horizon_days})
            group by b.customer_id"""
    else:
        later_aum = "select null::varchar as customer_id, null::decimal as aum_later where false"
    return con.sql(
        f"""
        with before as ({initiated(window)}),
        after as ({initiated(future)}),
        later as ({later_aum})
        select f.customer_id,
               f.customer_id in (select customer_id from before) as is_eligible,
               coalesce(f.aum_cny > 0
                        and coalesce(l.aum_later, 0) <= (1 - $drop) * f.aum_cny, false)
               or f.customer_id not in (select customer_id from after) as is_churned
        from {features} f
        left join later l using (customer_id)
        """,
        params={"snapshot": snapshot, "drop": params.aum_drop_share},
    )


def training_examples(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    sources: dict[str, str | None],
    params: ChurnParams,
    customer_features_params: CustomerFeaturesParams,
    snapshot: date,
    max_rows: int | None = None,
) -> pl.DataFrame:
    """Point-in-time features at `snapshot` and the label from the horizon after it, for the
    eligible customers: customer_id, snapshot_on, <features>, is_churned. Beyond `max_rows`
    eligible customers, a seeded sample of them (seeded_order)."""
    table = features_at(
        con,
        stg_transactions=stg_transactions,
        sources=sources,
        params=customer_features_params,
        snapshot=snapshot,
        table=f"churn_features_{snapshot:%Y%m%d}",
    )
    churn_labels(
        con,
        table,
        stg_transactions=stg_transactions,
        stg_balances=sources["stg_balances"],
        stg_products=sources["stg_products"],
        stg_events=sources["stg_events"],
        params=params,
        snapshot=snapshot,
    ).create_view(f"{table}_labels", replace=True)
    columns = ", ".join(f"f.{quote(c)}::double as {quote(c)}" for c in params.features)
    frame = con.sql(
        f"""
        select f.customer_id, $snapshot::date as snapshot_on, {columns}, l.is_churned
        from {table} f join {table}_labels l using (customer_id)
        where l.is_eligible
        order by {seeded_order(params.seed, "f.customer_id")}
        limit $max_rows
        """,
        params={"snapshot": snapshot, "max_rows": max_rows},
    ).pl()
    con.execute(f"drop view {table}_labels; drop table {table}")
    return frame.sort("customer_id")


# bump when the saved model or its metadata change shape: older artifacts are then not reused
ARTIFACT_FORMAT = 3


def _train(con, stg_transactions, sources, params, features_params, as_of, context):
    snapshots = snapshot_dates(as_of, params)
    frames = []
    with training_sample(
        con,
        stg_transactions=stg_transactions,
        sources=sources,
        customers=params.training_customers,
        seed=params.seed,
        name="churn_sample",
    ) as (sample_transactions, sample_sources):
        for snapshot in snapshots:
            frames.append(
                training_examples(
                    con,
                    stg_transactions=sample_transactions,
                    sources=sample_sources,
                    params=params,
                    customer_features_params=features_params,
                    snapshot=snapshot,
                    max_rows=params.max_training_rows // len(snapshots),
                )
            )
            context.info(f"    churn_scores: {snapshot} -> {len(frames[-1]):,} training examples")
    examples = pl.concat(frames)
    # oldest snapshots fit the booster, the next one calibrates it, the newest test it
    test_from = snapshots[-params.test_snapshots]
    calibration_on = snapshots[-params.test_snapshots - 1]
    train = examples.filter(pl.col("snapshot_on") < calibration_on)
    calibration = examples.filter(pl.col("snapshot_on") == calibration_on)
    test = examples.filter(pl.col("snapshot_on") >= test_from)
    y_test = test["is_churned"].cast(pl.Int8).to_numpy()
    try:
        model = fit_churn_model(
            feature_matrix(train, params.features),
            train["is_churned"].cast(pl.Int8).to_numpy(),
            feature_matrix(calibration, params.features),
            calibration["is_churned"].cast(pl.Int8).to_numpy(),
            params.features,
            seed=params.seed,
            **params.model.model_dump(),
        )
    except ValueError as error:
        raise InputError(f"churn_scores: cannot train: {error}") from None
    probability = model.predict(feature_matrix(test, params.features))
    metrics = evaluate(y_test, probability)
    # the baseline: recency alone (the longer since any activity, the likelier to churn)
    recency = test["days_since_last_activity"].fill_null(10_000).to_numpy().astype(float)
    baseline = evaluate(y_test, recency, probability=False)
    model.metrics = metrics
    metadata = {
        "trained_on": as_of.isoformat(),
        "config_hash": settings_hash(ARTIFACT_FORMAT, params, features_params),
        "training_from": snapshots[0].isoformat(),
        "training_to": (snapshots[-1] + timedelta(days=params.horizon_days)).isoformat(),
        "snapshots": [s.isoformat() for s in snapshots],
        "test_snapshots": [s.isoformat() for s in snapshots[-params.test_snapshots :]],
        "training_rows": len(train),
        "calibration_rows": len(calibration),
        "test_rows": len(test),
        "metrics": metrics,
        "baseline_metrics": baseline,
        "calibration": calibration_table(y_test, probability),
        "lift": {"model": lift_table(y_test, probability), "baseline": lift_table(y_test, recency)},
        "features": params.features,
    }
    version = f"{as_of.isoformat()}-{metadata['config_hash']}"
    return context.artifacts.save(version, model, metadata)


def churn_scores(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    stg_transactions: str,
    stg_customers: str | None,
    stg_balances: str | None,
    stg_products: str | None,
    stg_events: str | None,
    stg_questionnaires: str | None,
    params: ChurnParams,
    customer_features_params: CustomerFeaturesParams,
    as_of: date,
    context: StageContext,
) -> dict[str, duckdb.DuckDBPyRelation]:
    unknown = sorted(set(params.features) - set(con.table(customer_features).columns))
    if unknown:
        raise ConfigError(f"churn_scores.features: {', '.join(unknown)} not in customer_features")
    sources = feature_sources(
        stg_customers, stg_balances, stg_products, stg_events, stg_questionnaires
    )
    settings = settings_hash(ARTIFACT_FORMAT, params, customer_features_params)
    artifact = context.artifacts.reusable(as_of, settings, params.retrain_every_days)
    if artifact is None:
        artifact = _train(
            con, stg_transactions, sources, params, customer_features_params, as_of, context
        )
        context.info(f"    churn_scores: trained model {artifact.version}")
    else:
        context.info(f"    churn_scores: scoring with model {artifact.version}")
    model = artifact.load()

    columns = ", ".join(f"{quote(c)}::double as {quote(c)}" for c in params.features)
    cuts = np.array([b.min_probability for b in params.risk_bands])
    codes = np.array([b.code for b in params.risk_bands])
    names = np.array([*params.features, ""], dtype=object)
    batches = []  # scored a batch at a time: one batch's feature matrix in memory, not all
    for frame, x in scoring_batches(
        con,
        f"select customer_id, {columns} from {customer_features} order by customer_id",
        params.features,
    ):
        probability = model.predict(x)
        # cut-offs fall to 0: the band is the first cut-off the probability reaches
        bands = codes[np.minimum((probability[:, None] < cuts[None, :]).sum(axis=1), len(cuts) - 1)]
        explain = np.isin(bands, params.reason_codes_for)
        reason_index = np.full((len(x), 3), -1)
        contribution = np.zeros((len(x), 3))
        if explain.any():
            reason_index[explain], contribution[explain] = model.reasons(x[explain])
        scored = frame.select("customer_id").with_columns(
            as_of=pl.lit(as_of),
            churn_probability=pl.Series(probability, dtype=pl.Float64),
            churn_risk_band=pl.Series(bands, dtype=pl.String),
        )
        for k in range(3):
            index = reason_index[:, k]
            value = np.where(index >= 0, x[np.arange(len(x)), np.maximum(index, 0)], np.nan)
            scored = scored.with_columns(
                pl.Series(f"reason_{k + 1}", names[index], dtype=pl.String).replace("", None),
                pl.Series(f"reason_{k + 1}_value", value, dtype=pl.Float64).fill_nan(None),
                pl.Series(
                    f"reason_{k + 1}_contribution",
                    np.where(index >= 0, contribution[:, k], np.nan),
                    dtype=pl.Float64,
                ).fill_nan(None),
            )
        batches.append(scored)
    scored = pl.concat(batches) if batches else _no_scores()
    scored = scored.with_columns(
        reason_text=pl.concat_str(
            [
                pl.format(
                    "{} = {} (+{})",
                    f"reason_{k}",
                    pl.col(f"reason_{k}_value").round(2),
                    pl.col(f"reason_{k}_contribution").round(3),
                )
                for k in (1, 2, 3)
            ],
            separator="; ",
            ignore_nulls=True,
        ).replace("", None),
        model_version=pl.lit(artifact.version),
        trained_on=pl.lit(artifact.trained_on),
    )
    meta = artifact.metadata
    terms = [
        *[(name, "metric", value, None) for name, value in meta["metrics"].items()],
        *[
            (f"baseline_{name}", "metric", value, None)
            for name, value in meta["baseline_metrics"].items()
        ],
        ("training_rows", "size", meta["training_rows"], None),
        ("calibration_rows", "size", meta["calibration_rows"], None),
        ("test_rows", "size", meta["test_rows"], None),
        ("horizon_days", "size", params.horizon_days, None),
    ]
    fits = fit_rows(
        as_of=as_of,
        stage="churn_scores",
        model="churn_gbm",
        terms=terms,
        training_from=date.fromisoformat(meta["training_from"]),
        training_to=date.fromisoformat(meta["training_to"]),
        trained_on=artifact.trained_on,
    )
    return {
        "churn_scores": con.from_arrow(scored.to_arrow()),
        MODEL_FITS: con.from_arrow(fits.to_arrow()),
    }


def _no_scores() -> pl.DataFrame:
    """The scored columns of a bank with no customers."""
    schema = {"customer_id": pl.String, "as_of": pl.Date}
    schema |= {"churn_probability": pl.Float64, "churn_risk_band": pl.String}
    for k in (1, 2, 3):
        schema |= {f"reason_{k}": pl.String, f"reason_{k}_value": pl.Float64}
        schema |= {f"reason_{k}_contribution": pl.Float64}
    return pl.DataFrame(schema=schema)


def expectations(params: ChurnParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [
        *not_null("churn_probability", "churn_risk_band"),
        between("churn_probability", 0, 1),
        in_set("churn_risk_band", [b.code for b in params.risk_bands]),
    ]
