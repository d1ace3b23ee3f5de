"""aum_tiers: the value tier of every customer from assets under management.

Grain: one row per customer_id and as_of (every customer in customer_features).
    aum_cny              deposits + investments on the latest balance snapshot (not loans)
    aum_tier             tier code: the highest tier whose min_aum_cny <= aum_cny
    aum_tier_name_zh     its Chinese display name
    is_private_banking   aum_cny >= private_banking.min_aum_cny (a sub-tier of the top tier)

Checks: customer_id unique; aum_cny >= 0 and not null; aum_tier in the configured codes.
Requires a balances source: without one the stage is skipped (no tier is invented).
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import AumTierParams


def aum_tiers(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    params: AumTierParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    bounds = [t.min_aum_cny for t in params.tiers]
    return con.sql(
        f"""
        with tiered as (
            select customer_id, aum_cny,
                   -- index of the highest boundary at or below the customer's AUM
                   list_count(list_filter($bounds, lambda b: b <= aum_cny)) as tier_index
            from {customer_features}
            where aum_cny is not null
        )
        select customer_id, $as_of::date as as_of, aum_cny,
               $codes[tier_index] as aum_tier,
               $names[tier_index] as aum_tier_name_zh,
               aum_cny >= $private_min as is_private_banking
        from tiered
        order by customer_id
        """,
        params={
            "as_of": as_of,
            "bounds": bounds,
            "codes": [t.code for t in params.tiers],
            "names": [t.name_zh for t in params.tiers],
            "private_min": params.private_banking.min_aum_cny,
        },
    )
