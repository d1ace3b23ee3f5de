"""aum_tiers: the value tier of every customer, from AUM averaged over a window, with hysteresis.

Grain: one row per customer_id and as_of (every customer in customer_features).
    aum_cny                   deposits + investments on the latest balance snapshot (not loans)
    aum_avg_cny               AUM averaged over customer_features.aum_average_days: the tier basis
    aum_tier, aum_tier_name_zh   the tier after hysteresis (below)
    is_private_banking        the private-banking sub-tier of the top tier, same hysteresis
    service_tier              private_banking for that sub-tier, else aum_tier: the key of the
                              service treatment in the segments block
    tier_without_hysteresis   the highest tier whose min_aum_cny <= aum_avg_cny
    previous_aum_tier, previous_as_of   from the latest earlier as-of in the warehouse (null for
                              a first run or a new customer)
    is_held_by_hysteresis     aum_tier differs from tier_without_hysteresis

Hysteresis (band h, default 10%): a customer moves up into a tier only when his average AUM
reaches its boundary x (1 + h), and down out of his previous tier only when it falls below that
tier's boundary x (1 - h); in between he keeps the tier he had. Without a previous tier the
plain boundaries apply. So a customer hovering at 3,000,000 does not flip nightly.

Checks: customer_id unique; aum_cny >= 0 and not null; aum_tier in the configured codes.
Requires a balances source: without one the stage is skipped (no tier is invented).
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import AumTierParams
from pipeline.expectations import Check, between, in_set, not_null


def aum_tiers(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    previous_aum_tiers: str | None,
    params: AumTierParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    previous = previous_aum_tiers or (
        "(select null::varchar as customer_id, null::date as as_of, null::varchar as aum_tier,"
        " null::boolean as is_private_banking where false)"
    )
    bounds = [t.min_aum_cny for t in params.tiers]
    band = params.hysteresis_band
    private_min = params.private_banking.min_aum_cny
    return con.sql(
        f"""
        with basis as (
            select f.customer_id, f.aum_cny, f.aum_avg_cny,
                   -- tier indexes are 1-based positions in $codes
                   list_count(list_filter($bounds, lambda b: b <= f.aum_avg_cny)) as plain_index,
                   list_count(list_filter($up_bounds, lambda b: b <= f.aum_avg_cny))
                       as up_index,
                   list_count(list_filter($down_bounds, lambda b: b <= f.aum_avg_cny))
                       as down_index,
                   list_position($codes, p.aum_tier) as previous_index,
                   p.aum_tier as previous_aum_tier, p.as_of as previous_as_of,
                   p.is_private_banking as was_private_banking
            from {customer_features} f
            left join {previous} p using (customer_id)
            where f.aum_avg_cny is not null
        ),
        tiered as (
            select *,
                   case when previous_index is null then plain_index
                        when up_index > previous_index then up_index
                        when down_index < previous_index then down_index
                        else previous_index end as tier_index,
                   case when was_private_banking is null then aum_avg_cny >= $private_min
                        when was_private_banking then aum_avg_cny >= $private_down
                        else aum_avg_cny >= $private_up end as private_basis
            from basis
        )
        select customer_id, $as_of::date as as_of, aum_cny, aum_avg_cny,
               $codes[tier_index] as aum_tier,
               $names[tier_index] as aum_tier_name_zh,
               private_basis and tier_index = len($codes) as is_private_banking,
               case when private_basis and tier_index = len($codes) then $private_code
                    else $codes[tier_index] end as service_tier,
               $codes[plain_index] as tier_without_hysteresis,
               previous_aum_tier, previous_as_of,
               tier_index <> plain_index as is_held_by_hysteresis
        from tiered
        order by customer_id
        """,
        params={
            "as_of": as_of,
            "bounds": bounds,
            # thresholds in whole cents, so 3,000,000 x 1.1 is 3,300,000.00 exactly
            "up_bounds": [round(b * (1 + band), 2) for b in bounds],
            "down_bounds": [round(b * (1 - band), 2) for b in bounds],
            "private_up": round(private_min * (1 + band), 2),
            "private_down": round(private_min * (1 - band), 2),
            "codes": [t.code for t in params.tiers],
            "names": [t.name_zh for t in params.tiers],
            "private_min": private_min,
            "private_code": params.private_banking.code,
        },
    )


def expectations(params: AumTierParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    codes = [t.code for t in params.tiers]
    return [
        *not_null("aum_tier", "aum_cny", "service_tier"),
        in_set("aum_tier", codes),
        in_set("service_tier", [*codes, params.private_banking.code]),
        between("aum_cny", 0),
        between("aum_avg_cny", 0),
    ]
