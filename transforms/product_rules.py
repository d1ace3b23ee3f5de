"""product_rules: exact association rules between the products customers hold.

Grain: one row per as_of, antecedent_key and consequent.
    antecedent                 the products on the left (ascending product_id)
    antecedent_key             the same joined with ' + ' (the key)
    antecedent_size
    consequent                 the one product on the right
    customers_with_antecedent  customers holding every product on the left
    customers_with_both        ... and the consequent too
    support                    customers_with_both / customers
    confidence                 customers_with_both / customers_with_antecedent
    lift                       confidence / share of customers holding the consequent

Baskets are the products each customer of customer_features holds with a positive balance on
the latest balance snapshot on or before as_of (a customer holding nothing is an empty basket
and counts in the denominator). Rules meet product_rules.min_support and min_confidence; the
itemsets have at most max_length products (null: no limit). Mining is exact (models/
association_rules.py; a test checks it against brute-force counting).

Checks: key unique; support, confidence within 0..1; lift > 0.
"""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl

from models.association_rules import mine_rules
from pipeline.config import ProductRulesParams


def holding_baskets(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    stg_balances: str,
    products: list[str],
    as_of: date,
) -> pl.DataFrame:
    """Distinct baskets as bitmasks (bit i = products[i]) with how many customers hold each."""
    return con.sql(
        f"""
        with held as (
            select customer_id, list_position($products, product_id) - 1 as bit
            from {stg_balances}
            where balance_on = (select max(balance_on) from {stg_balances}
                                where balance_on <= $as_of)
              and balance_cny > 0 and list_position($products, product_id) > 0
        ),
        baskets as (
            select f.customer_id, coalesce(bit_or(1::ubigint << h.bit), 0::ubigint) as mask
            from {customer_features} f left join held h using (customer_id)
            group by f.customer_id
        )
        select mask, count(*) as customers from baskets group by mask order by mask
        """,
        params={"products": products, "as_of": as_of},
    ).pl()


def product_rules(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    stg_balances: str,
    stg_products: str,
    params: ProductRulesParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    products = [
        r[0]
        for r in con.sql(
            f"select distinct product_id from {stg_products} order by product_id"
        ).fetchall()
    ]
    baskets = holding_baskets(
        con,
        customer_features=customer_features,
        stg_balances=stg_balances,
        products=products,
        as_of=as_of,
    )
    rules = mine_rules(
        baskets["mask"].to_numpy(),
        baskets["customers"].to_numpy(),
        len(products),
        min_support=params.min_support,
        min_confidence=params.min_confidence,
        max_length=params.max_length,
    )
    frame = pl.DataFrame(
        {
            "as_of": [as_of] * len(rules),
            "antecedent": [[products[i] for i in r.antecedent] for r in rules],
            "antecedent_key": [" + ".join(products[i] for i in r.antecedent) for r in rules],
            "antecedent_size": [len(r.antecedent) for r in rules],
            "consequent": [products[r.consequent] for r in rules],
            "customers_with_antecedent": [int(r.antecedent_count) for r in rules],
            "customers_with_both": [int(r.both_count) for r in rules],
            "support": [r.support for r in rules],
            "confidence": [r.confidence for r in rules],
            "lift": [r.lift for r in rules],
        },
        schema={
            "as_of": pl.Date,
            "antecedent": pl.List(pl.String),
            "antecedent_key": pl.String,
            "antecedent_size": pl.Int32,
            "consequent": pl.String,
            "customers_with_antecedent": pl.Int64,
            "customers_with_both": pl.Int64,
            "support": pl.Float64,
            "confidence": pl.Float64,
            "lift": pl.Float64,
        },
    )
    return con.from_arrow(frame.to_arrow())
