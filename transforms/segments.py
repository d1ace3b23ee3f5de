"""segments: the one wide table downstream systems load, every dimension side by side.

Grain: one row per customer_id and as_of (every customer in customer_features).
    aum_cny, aum_avg_cny, aum_tier, aum_tier_name_zh, is_private_banking, service_tier
                                     from aum_tiers (null when there is no balances source)
    stated_risk_class, behavioural_risk_class, questionnaire_status, max_product_risk_level,
    is_risk_mismatch, is_latent_aggressive, risk_flags          from risk_profiles
    lifecycle_stage, life_stage, occupation, relationship_depth  from their stages
    rfm_segment, rfm_cell                                        from rfm_scores
    cluster_id, cluster_label        from clusters (null when that stage is not run)
    churn_probability, churn_risk_band   from churn_scores (likewise)
    clv_cny                          from clv_estimates (likewise)
    banking_value_cny                from banking_values (likewise)
    segment_code                     short codes of segments.code_parts joined by the separator,
                                     e.g. A-C3-FC (affluent, balanced, family with children);
                                     a part without a value shows as NA
    coverage_model, response_sla_hours, value_added_services
                                     the service treatment of the customer's service_tier
    previous_as_of                   the latest earlier as-of of segments in the warehouse
    previous_segment_code            the customer's code then (null when he was not there)
    changed_dimensions               the migration dimensions whose value changed since then
                                     (empty: none; null: no earlier row for the customer)

Checks: customer_id unique; categorical columns within their configured codes.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import SegmentsParams
from pipeline.expectations import Check, between, in_set
from transforms.scratch import align, check_aligned, materialise, scratch_table
from transforms.staging import literal, quote


def _short(column: str) -> str:
    value = f"{quote(column)}::varchar"
    return f"coalesce($short_values[list_position($short_keys, {value})], {value}, 'NA')"


def segments(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    rfm_scores: str,
    risk_profiles: str,
    lifecycle_stages: str,
    life_stages: str,
    relationship_depth: str,
    aum_tiers: str | None,
    clusters: str | None,
    clv_estimates: str | None,
    churn_scores: str | None,
    banking_values: str | None,
    previous_segments: str | None,
    params: SegmentsParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    tiers = aum_tiers or (
        "(select null::varchar as customer_id, null::decimal(18, 2) as aum_cny,"
        " null::decimal(18, 2) as aum_avg_cny, null::varchar as aum_tier,"
        " null::varchar as aum_tier_name_zh, null::boolean as is_private_banking,"
        " null::varchar as service_tier where false)"
    )
    previous = previous_segments or (
        "(select null::varchar as customer_id, null::date as as_of,"
        " null::varchar as segment_code,"
        + "".join(f" null::varchar as {quote(d)}," for d in params.migration_dimensions)
        + " where false)"
    )
    assigned = clusters or (
        "(select null::varchar as customer_id, null::integer as cluster_id,"
        " null::varchar as cluster_label where false)"
    )
    values = clv_estimates or (
        "(select null::varchar as customer_id, null::decimal(18, 2) as clv_cny where false)"
    )
    worth = banking_values or (
        "(select null::varchar as customer_id, null::decimal(18, 2) as banking_value_cny"
        " where false)"
    )
    churn = churn_scores or (
        "(select null::varchar as customer_id, null::double as churn_probability,"
        " null::varchar as churn_risk_band where false)"
    )
    code = (
        f"concat_ws({literal(params.separator)}, "
        + ", ".join(_short(part) for part in params.code_parts)
        + ")"
    )
    changed = ", ".join(
        f"case when c.{quote(d)}::varchar is distinct from p.{quote(d)}::varchar "
        f"then {literal(d)} end"
        for d in params.migration_dimensions
    )
    services = sorted(params.service.items())
    compared = ", ".join(
        [
            "customer_id",
            "segment_code",
            *dict.fromkeys(quote(d) for d in params.migration_dimensions),
        ]
    )
    # Each input is aligned to the population (customer_features' customer_ids, in order) as a
    # scratch table, one spilling join at a time, and the aligned tables are put side by side
    # with POSITIONAL JOIN (transforms/scratch.py). A single query left-joining all eleven
    # inputs failed at 5M customers under a 2 GB memory limit.
    population = scratch_table("segments", "population")
    materialise(
        con, population, f"select customer_id from {customer_features} order by customer_id"
    )
    inputs = {
        "t": tiers,
        "r": risk_profiles,
        "lc": lifecycle_stages,
        "ls": life_stages,
        "rd": relationship_depth,
        "rfm": rfm_scores,
        "k": assigned,
        "v": values,
        "c": churn,
        "w": worth,
        # the previous run's codes, narrowed to the columns compared: it is the one input not
        # in line on a nightly run, so it is copied (at 5M the nightly stage took 27.3 s
        # against 13.0 s on a first run; at 1M narrowing took it from 2.9 s to 2.5 s)
        "p": f"(select {compared}, true as had_row from {previous})",
    }
    aligned = {alias: scratch_table("segments", alias) for alias in inputs}
    for alias, source in inputs.items():
        align(con, population, aligned[alias], source)
    check_aligned(con, "segments", population, list(aligned.values()))
    side_by_side = " ".join(  # the previous run's codes join after the segment code is made
        f"positional join {table} {alias}" for alias, table in aligned.items() if alias != "p"
    )
    return con.sql(
        f"""
        with joined as (
            select f.customer_id, $as_of::date as as_of,
                   t.aum_cny, t.aum_avg_cny, t.aum_tier, t.aum_tier_name_zh,
                   t.is_private_banking, t.service_tier,
                   r.stated_risk_class, r.behavioural_risk_class, r.questionnaire_status,
                   r.max_product_risk_level, r.is_risk_mismatch, r.is_latent_aggressive,
                   r.risk_flags,
                   lc.lifecycle_stage, ls.life_stage, ls.occupation, rd.relationship_depth,
                   rfm.rfm_segment, rfm.rfm_cell,
                   k.cluster_id::integer as cluster_id, k.cluster_label,
                   c.churn_probability, c.churn_risk_band,
                   v.clv_cny::decimal(18, 2) as clv_cny,
                   w.banking_value_cny::decimal(18, 2) as banking_value_cny
            from {population} f {side_by_side}
        ),
        coded as (
            select *, {code} as segment_code,
                   list_position($service_keys, service_tier) as service_index
            from joined
        )
        select c.* exclude (service_index),
               $coverage_models[c.service_index] as coverage_model,
               $response_hours[c.service_index] as response_sla_hours,
               $value_added[c.service_index] as value_added_services,
               (select max(as_of) from {previous}) as previous_as_of,
               p.segment_code as previous_segment_code,
               case when p.had_row then
                   list_filter([{changed}], lambda d: d is not null) end as changed_dimensions
        from coded c positional join {aligned["p"]} p
        """,
        params={
            "as_of": as_of,
            "short_keys": list(params.short_codes),
            "short_values": list(params.short_codes.values()),
            "service_keys": [k for k, _ in services],
            "coverage_models": [s.coverage_model for _, s in services],
            "response_hours": [s.response_sla_hours for _, s in services],
            "value_added": [s.value_added_services for _, s in services],
        },
    )


def expectations(params: SegmentsParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [
        in_set(
            "coverage_model", ["digital_self_service", "relationship_manager", "private_banker"]
        ),
        in_set("service_tier", list(params.service)),
        between("churn_probability", 0, 1),
    ]
