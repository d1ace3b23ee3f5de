"""segment_summaries: every segment at a glance, so an analyst needs no SQL to size them.

Grain: one row per as_of, dimension and segment_value.
    dimension             aum_tier, service_tier, segment_code and every migration dimension
    segment_value         the value ('(none)' for customers without one)
    customers, share_of_customers
    aum_total_cny, aum_mean_cny, aum_median_cny   (null without a balances source)
    churn_probability_mean, clv_mean_cny          (null until the model stages exist)
    mean_<feature>        the mean of each customer_features column in
                          segments.summary_features

Checks: key unique; customers > 0; share_of_customers within 0..1 and summing to 1 per
dimension.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import SegmentsParams
from pipeline.errors import ConfigError
from transforms.staging import exact_avg, literal, quote


def summary_dimensions(params: SegmentsParams) -> list[str]:
    leading = ["aum_tier", "service_tier", "segment_code"]
    return leading + [d for d in params.migration_dimensions if d not in leading]


def segment_summaries(
    con: duckdb.DuckDBPyConnection,
    *,
    segments: str,
    customer_features: str,
    params: SegmentsParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    features = params.summary_features
    unknown = sorted(set(features) - set(con.table(customer_features).columns))
    if unknown:
        raise ConfigError(
            f"segments.summary_features: {', '.join(unknown)} not in customer_features"
        )
    means = "".join(
        f", {exact_avg(quote('feature_' + f))} as {quote('mean_' + f)}" for f in features
    )
    per_dimension = " union all ".join(
        f"""select {i} as position, {literal(d)} as dimension,
                   coalesce({quote(d)}::varchar, '(none)') as segment_value,
                   count(*) as customers,
                   sum(aum_cny)::decimal(18, 2) as aum_total_cny,
                   round(avg(aum_cny), 2)::decimal(18, 2) as aum_mean_cny,
                   round(median(aum_cny), 2)::decimal(18, 2) as aum_median_cny,
                   {exact_avg("churn_probability")} as churn_probability_mean,
                   round(avg(clv_cny), 2)::decimal(18, 2) as clv_mean_cny
                   {means}
            from profiled
            group by all"""
        for i, d in enumerate(summary_dimensions(params))
    )
    return con.sql(
        f"""
        with profiled as (
            select s.* {"".join(f", f.{quote(c)} as {quote('feature_' + c)}" for c in features)}
            from {segments} s
            join {customer_features} f using (customer_id)
        ),
        summarised as ({per_dimension})
        select dimension, $as_of::date as as_of, segment_value, customers,
               customers / sum(customers) over (partition by dimension) as share_of_customers,
               * exclude (position, dimension, segment_value, customers)
        from summarised
        order by position, segment_value
        """,
        params={"as_of": as_of},
    )
