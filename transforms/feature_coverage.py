"""feature_coverage: how much of the 360-degree profile is known, per feature group.

Grain: one row per feature_group and as_of.
    feature_group        demographics, transactions, holdings, behaviour, questionnaire, and
                         extra_attributes when customer_features.extra_attributes lists any
    customers            customers in customer_features
    customers_covered    customers with data in the group (the `evidence` rule)
    coverage_share       customers_covered / customers (0 when there are no customers)
    min_share            the configured minimum for the group
    is_below_minimum     coverage_share < min_share; the run warns for each such group
    evidence             the SQL rule that counts a customer as covered

Checks: feature_group unique; coverage_share within 0..1.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import CustomerFeaturesParams
from pipeline.expectations import Check, between
from transforms.customer_features import FEATURE_GROUPS
from transforms.staging import literal, quote


def feature_groups(params: CustomerFeaturesParams) -> dict[str, str]:
    groups = dict(FEATURE_GROUPS)
    if params.extra_attributes:
        groups["extra_attributes"] = " and ".join(
            f"{quote(c)} is not null" for c in params.extra_attributes
        )
    return groups


def feature_coverage(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    params: CustomerFeaturesParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    groups = feature_groups(params)
    coverage = params.coverage
    rows = " union all ".join(
        f"select {i} as position, {literal(name)} as feature_group, "
        f"count(*) filter (where coalesce({rule}, false)) as customers_covered, "
        f"{coverage.min_share_by_group.get(name, coverage.min_share)!r} as min_share, "
        f"{literal(rule)} as evidence from {customer_features}"
        for i, (name, rule) in enumerate(groups.items())
    )
    return con.sql(
        f"""
        with counted as ({rows}),
        population as (select count(*) as customers from {customer_features})
        select feature_group, $as_of::date as as_of, customers, customers_covered,
               coalesce(customers_covered / nullif(customers, 0), 0) as coverage_share,
               min_share,
               coalesce(customers_covered / nullif(customers, 0), 0) < min_share
                   as is_below_minimum,
               evidence
        from counted, population
        order by position
        """,
        params={"as_of": as_of},
    )


def coverage_warnings(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """One message per group under its minimum, for the run's warnings."""
    return [
        f"feature coverage: {group} covers {share:.1%} of customers, under the minimum "
        f"{minimum:.0%} ({covered:,} of {total:,})"
        for group, share, minimum, covered, total in con.execute(
            f"select feature_group, coverage_share, min_share, customers_covered, customers "
            f"from {table} where is_below_minimum order by feature_group"
        ).fetchall()
    ]


def expectations(params: CustomerFeaturesParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [between("coverage_share", 0, 1), between("customers_covered", 0)]
