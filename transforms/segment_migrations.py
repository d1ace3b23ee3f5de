"""segment_migrations: who moved where since the previous as-of, per dimension.

Grain: one row per as_of, dimension, from_value and to_value.
    dimension          one of segments.migration_dimensions (and segment_code)
    previous_as_of     the latest earlier as-of of segments in the warehouse
    from_value         the value then; '(absent)' for a customer not in that run, '(none)' for
                       a null value
    to_value           the value now; '(absent)' for a customer who left, '(none)' for null
    customers          how many customers made that move
    is_change          from_value <> to_value

Totals: per dimension, the customers with to_value <> '(absent)' are the current run's
customers, those with from_value <> '(absent)' the previous run's. Without a previous as-of the
table is empty (and the run says so).

Checks: key unique; customers > 0.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import SegmentsParams
from transforms.staging import literal, quote


def segment_migrations(
    con: duckdb.DuckDBPyConnection,
    *,
    segments: str,
    previous_segments: str | None,
    params: SegmentsParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    dimensions = [*params.migration_dimensions, "segment_code"]
    if previous_segments is None:
        return con.sql(
            "select null::varchar as dimension, $as_of::date as as_of, "
            "null::date as previous_as_of, null::varchar as from_value, "
            "null::varchar as to_value, null::bigint as customers, null::boolean as is_change "
            "where false",
            params={"as_of": as_of},
        )

    def side(alias: str, dimension: str) -> str:
        return (
            f"case when {alias}_customer_id is null then '(absent)' "
            f"else coalesce({quote(alias + '_' + dimension)}::varchar, '(none)') end"
        )

    moves = " union all ".join(
        f"select {i} as position, {literal(d)} as dimension, "
        f"{side('p', d)} as from_value, {side('c', d)} as to_value from pairs"
        for i, d in enumerate(dimensions)
    )
    return con.sql(
        f"""
        with pairs as materialized (
            select c.customer_id as c_customer_id, p.customer_id as p_customer_id,
                   {", ".join(f"c.{quote(d)} as c_{d}, p.{quote(d)} as p_{d}" for d in dimensions)}
            from {segments} c full outer join {previous_segments} p using (customer_id)
        ),
        moves as ({moves})
        select dimension, $as_of::date as as_of,
               (select max(as_of) from {previous_segments}) as previous_as_of,
               from_value, to_value, count(*) as customers,
               from_value <> to_value as is_change
        from moves
        group by position, dimension, from_value, to_value
        order by position, from_value, to_value
        """,
        params={"as_of": as_of},
    )
