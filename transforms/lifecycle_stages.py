"""lifecycle_stages: onboarding / growth / mature / decline / lapsed, by rules in config.

Grain: one row per customer_id and as_of (every customer in customer_features).
    lifecycle_stage, lifecycle_stage_name_zh   the first rule of lifecycle_stages.rules that holds
    lifecycle_stage_rule                       that rule as text, e.g. "tenure_days < 180"
    tenure_days, days_since_last_activity, activity_trend, aum_change_3m_pct,
    and any other feature the rules read

The default rules read tenure and the trends of activity and AUM: new relationships are in
onboarding; no transaction or login for 180 days, or an emptied account, is lapsed (the
retention stage); falling activity or AUM is decline; a young relationship or fast AUM growth
is growth; the rest is mature.

Checks: customer_id unique; lifecycle_stage in the configured codes.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import RuleDimensionParams
from transforms.rules import classify


def lifecycle_stages(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    params: RuleDimensionParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    return classify(
        con,
        customer_features,
        params.rules,
        dimension="lifecycle_stage",
        config_block="lifecycle_stages",
        as_of=as_of,
        keep=("tenure_days", "days_since_last_activity", "activity_trend", "aum_change_3m_pct"),
    )
