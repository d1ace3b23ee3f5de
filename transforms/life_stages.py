"""life_stages: young single, family with children, pre-retirement, retired, by rules in config.

Grain: one row per customer_id and as_of (every customer in customer_features).
    life_stage, life_stage_name_zh, life_stage_rule   the first rule of life_stages.rules that
                                                      holds, and that rule as text
    occupation                                        kept beside it, as banks segment by both
    age_years, marital_status, children_count, and any other feature the rules read

Checks: customer_id unique; life_stage in the configured codes.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import RuleDimensionParams
from transforms.rules import classify


def life_stages(
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
        dimension="life_stage",
        config_block="life_stages",
        as_of=as_of,
        keep=("occupation", "age_years", "marital_status", "children_count"),
    )
