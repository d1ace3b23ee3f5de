"""clusters and cluster_profiles: K-means segments whose ids mean the same group every night.

clusters — grain: one row per customer_id and as_of (every customer in customer_features).
    cluster_id             stable across runs (see below)
    cluster_label          a generated description, e.g. "high aum_avg_cny, low txn_count_90d"
    distance_to_centroid   in standard units

cluster_profiles — grain: one row per cluster_id and as_of.
    cluster_label, customers, share_of_customers
    status                 continuing (matched a previous cluster) | new
    match_distance         distance to the matched previous centroid (null when new)
    previous_as_of         the cluster_profiles as-of it was matched against
    centroid_<feature>     the centroid in the feature's own units (what the next run matches)
    mean_<feature>         the mean of the cluster's customers
    z_<feature>            the centroid in standard units: how far from the population it sits

Also writes its model_fits rows (model "kmeans"): k, inertia, silhouette per k tried, bootstrap
adjusted Rand index (mean, min), fit rows, new and vanished clusters.

Stable ids: the centroids of the previous as-of (cluster_profiles) are put into this run's
standard units and matched to the new centroids by Hungarian assignment; a pair within
clusters.max_match_distance keeps the previous id. A new cluster gets a fresh id (never a reused
one) and a vanished one is reported as a warning: nothing is silently renumbered.

Checks: customer_id unique; cluster_id not null; every customer assigned.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import polars as pl

from models.segmentation import describe, fit_clusters, match_previous
from pipeline.artifacts import StageContext
from pipeline.config import ClusterParams
from pipeline.errors import ConfigError
from transforms.model_fits import MODEL_FITS, fit_rows
from transforms.staging import quote


def clusters(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    previous_cluster_profiles: str | None,
    params: ClusterParams,
    as_of: date,
    context: StageContext,
) -> dict[str, duckdb.DuckDBPyRelation]:
    features = params.features
    unknown = sorted(set(features) - set(con.table(customer_features).columns))
    if unknown:
        raise ConfigError(f"clusters.features: {', '.join(unknown)} not in customer_features")
    frame = con.sql(
        f"select customer_id, {', '.join(f'{quote(f)}::double as {quote(f)}' for f in features)} "
        f"from {customer_features} order by customer_id"
    ).pl()
    raw = frame.select(features).to_numpy().astype(np.float64)
    fit = fit_clusters(
        raw,
        features,
        params.log_features,
        k=params.k,
        k_range=params.k_range,
        seed=params.seed,
        fit_sample_size=params.fit_sample_size,
        silhouette_sample_size=params.silhouette_sample_size,
        bootstrap_rounds=params.bootstrap_rounds,
    )

    previous_ids, previous_centroids, previous_as_of = [], np.empty((0, len(features))), None
    if previous_cluster_profiles is not None:
        previous = con.table(previous_cluster_profiles).pl()
        centroid_columns = [f"centroid_{f}" for f in features]
        if set(centroid_columns) <= set(previous.columns):
            previous = previous.sort("cluster_id")
            previous_ids = previous["cluster_id"].to_list()
            previous_centroids = previous.select(centroid_columns).to_numpy().astype(np.float64)
            previous_as_of = previous["as_of"][0]
        else:
            context.warn("clusters: the previous run clustered on other features; ids start afresh")
    matching = match_previous(fit, previous_ids, previous_centroids, params.max_match_distance)
    fit.cluster_ids = matching.cluster_ids
    if previous_ids and matching.new_ids:
        context.warn(f"clusters: new cluster(s) {matching.new_ids} match no previous cluster")
    if matching.vanished_ids:
        context.warn(f"clusters: previous cluster(s) {matching.vanished_ids} have no match now")

    labels, distances = fit.assign(raw)
    names = {cid: describe(fit, cid, features) for cid in fit.cluster_ids}
    assigned = frame.select("customer_id").with_columns(
        as_of=pl.lit(as_of),
        cluster_id=pl.Series(labels, dtype=pl.Int32),
        cluster_label=pl.Series(labels).replace_strict(names, return_dtype=pl.String),
        distance_to_centroid=pl.Series(distances),
    )

    centroids_raw = fit.scaler.inverse(fit.centroids)
    means = _member_means(raw, labels, fit.cluster_ids, features)
    profile = pl.DataFrame(
        {
            "cluster_id": pl.Series(fit.cluster_ids, dtype=pl.Int32),
            "as_of": [as_of] * fit.k,
            "cluster_label": [names[c] for c in fit.cluster_ids],
            "status": ["new" if d is None else "continuing" for d in matching.distances],
            "match_distance": pl.Series(matching.distances, dtype=pl.Float64),
            "previous_as_of": pl.Series([previous_as_of] * fit.k, dtype=pl.Date),
            **{f"centroid_{f}": centroids_raw[:, i] for i, f in enumerate(features)},
            **{f"z_{f}": fit.centroids[:, i].astype(np.float64) for i, f in enumerate(features)},
        }
    )
    profile = (
        profile.join(means, on="cluster_id", how="left")
        .with_columns(
            pl.col("customers").fill_null(0),
            share_of_customers=pl.col("customers").fill_null(0) / len(frame),
        )
        .select(
            "cluster_id",
            "as_of",
            "cluster_label",
            "customers",
            "share_of_customers",
            "status",
            "match_distance",
            "previous_as_of",
            pl.selectors.starts_with("centroid_"),
            pl.selectors.starts_with("mean_"),
            pl.selectors.starts_with("z_"),
        )
        .sort("cluster_id")
    )

    ari = fit.bootstrap_ari
    terms = [
        ("k", "parameter", fit.k, None),
        ("inertia", "metric", fit.inertia, None),
        *[(f"silhouette_k{k}", "metric", v, None) for k, v in sorted(fit.silhouette_by_k.items())],
        ("bootstrap_ari_mean", "metric", float(np.mean(ari)) if ari else None, None),
        ("bootstrap_ari_min", "metric", min(ari) if ari else None, None),
        ("bootstrap_rounds", "size", len(ari), None),
        ("fit_rows", "size", fit.fit_rows, None),
        ("customers_assigned", "size", len(frame), None),
        ("new_clusters", "size", len(matching.new_ids) if previous_ids else 0, None),
        ("vanished_clusters", "size", len(matching.vanished_ids), None),
    ]
    fits = fit_rows(
        as_of=as_of,
        stage="clusters",
        model="kmeans",
        terms=terms,
        training_from=as_of,
        training_to=as_of,
    )
    context.info(
        f"    clusters: k={fit.k}, bootstrap ARI {np.mean(ari) if ari else float('nan'):.2f}, "
        f"{sum(s == 'continuing' for s in profile['status'])} of {fit.k} matched the previous run"
    )
    return {
        "clusters": con.from_arrow(assigned.to_arrow()),
        "cluster_profiles": con.from_arrow(profile.to_arrow()),
        MODEL_FITS: con.from_arrow(fits.to_arrow()),
    }


def _member_means(
    raw: np.ndarray, labels: np.ndarray, cluster_ids: list[int], features: list[str]
) -> pl.DataFrame:
    """Customers and the mean of each feature (nulls left out) per cluster. Summed in row
    order with np.bincount, so the figures are the same to the last bit on every run (a
    parallel group-by adds floats in whatever order its threads finish)."""
    size = max(cluster_ids) + 1
    present = ~np.isnan(raw)
    columns = {
        "cluster_id": pl.Series(cluster_ids, dtype=pl.Int32),
        "customers": pl.Series(np.bincount(labels, minlength=size)[cluster_ids], dtype=pl.UInt32),
    }
    for i, feature in enumerate(features):
        sums = np.bincount(labels, weights=np.where(present[:, i], raw[:, i], 0.0), minlength=size)
        counts = np.bincount(labels, weights=present[:, i], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums[cluster_ids] / counts[cluster_ids]
        columns[f"mean_{feature}"] = pl.Series(np.where(counts[cluster_ids] > 0, mean, np.nan))
    return pl.DataFrame(columns).with_columns(pl.selectors.starts_with("mean_").fill_nan(None))
