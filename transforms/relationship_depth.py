"""relationship_depth: basic / multi-product / ecosystem, by rules in config.

Grain: one row per customer_id and as_of (every customer in customer_features).
    relationship_depth, relationship_depth_name_zh, relationship_depth_rule
        the first rule of relationship_depth.rules that holds, and that rule as text
    products_held, product_families_held, non_payment_families_held, has_salary_inflow,
    has_business_link, and any other feature the rules read

Default rules: basic = deposits and payments only; multi_product = also wealth, funds,
insurance or loans; ecosystem = multi-product with a payroll or business link to the bank.

Checks: customer_id unique; relationship_depth in the configured codes.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import RuleDimensionParams
from transforms.rules import classify


def relationship_depth(
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
        dimension="relationship_depth",
        config_block="relationship_depth",
        as_of=as_of,
        keep=(
            "products_held",
            "product_families_held",
            "non_payment_families_held",
            "has_salary_inflow",
            "has_business_link",
        ),
    )
