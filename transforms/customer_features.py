"""customer_features: the per-customer profile the segment dimensions and models start from.

Grain: one row per customer_id and as_of. The customers are those on the latest customers
snapshot on or before as_of and opened by then; without a customers source, every customer
with a transaction.

Columns (windows from config, default 30/90/365 days ending on as_of inclusive):
    customer_id, as_of
    age_years, tenure_days, gender, occupation, marital_status, children_count   (null when no
        customers source; age null when birth_on is missing)
    txn_count_<w>d, txn_amount_<w>d_cny, inflow_<w>d_cny, outflow_<w>d_cny        (0 when none)
    last_txn_on, days_since_last_txn                                             (null when none)
    balance_on        the balances snapshot date used (latest on or before as_of)
    aum_cny           deposits + investments (balance_type asset), never loans
    loan_balance_cny  liabilities (loans, cards)
    products_held     distinct products with a positive balance
    (the four balance columns are null when there is no balances source, 0 when the customer
    holds nothing on the snapshot date)

Checks: customer_id unique and not null; counts and amounts >= 0; days_since_last_txn >= 0.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import CustomerFeaturesParams


def customer_features(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    stg_customers: str | None,
    stg_balances: str | None,
    stg_products: str | None,
    params: CustomerFeaturesParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    windows = params.windows_days
    window_columns = ",\n".join(
        f"""count(*) filter (where days_ago < {w}) as txn_count_{w}d,
            coalesce(sum(amount_cny) filter (where days_ago < {w}), 0) as txn_amount_{w}d_cny,
            coalesce(sum(amount_cny) filter (where days_ago < {w} and direction = 'credit'), 0)
                as inflow_{w}d_cny,
            coalesce(sum(amount_cny) filter (where days_ago < {w} and direction = 'debit'), 0)
                as outflow_{w}d_cny"""
        for w in windows
    )
    filled = ",\n".join(
        f"coalesce(t.txn_count_{w}d, 0) as txn_count_{w}d, "
        f"coalesce(t.txn_amount_{w}d_cny, 0) as txn_amount_{w}d_cny, "
        f"coalesce(t.inflow_{w}d_cny, 0) as inflow_{w}d_cny, "
        f"coalesce(t.outflow_{w}d_cny, 0) as outflow_{w}d_cny"
        for w in windows
    )
    if stg_customers:
        population = f"""
            select customer_id,
                   date_diff('year', birth_on, $as_of)
                       - (strftime(birth_on, '%m%d') > strftime($as_of, '%m%d'))::int as age_years,
                   date_diff('day', opened_on, $as_of) as tenure_days,
                   gender, occupation, marital_status, children_count
            from {stg_customers}
            where opened_on <= $as_of
        """
    else:
        population = f"""
            select distinct customer_id, null::bigint as age_years, null::bigint as tenure_days,
                   null::varchar as gender, null::varchar as occupation,
                   null::varchar as marital_status, null::bigint as children_count
            from {stg_transactions}
        """
    if stg_balances and stg_products:
        holdings = f"""
            snapshot as (
                select max(balance_on) as balance_on from {stg_balances} where balance_on <= $as_of
            ),
            holdings as (
                select b.customer_id, any_value(s.balance_on) as balance_on,
                       coalesce(sum(b.balance_cny) filter (where p.balance_type = 'asset'), 0)
                           as aum_cny,
                       coalesce(sum(b.balance_cny) filter (where p.balance_type = 'liability'), 0)
                           as loan_balance_cny,
                       count(distinct b.product_id) filter (where b.balance_cny > 0)
                           as products_held
                from {stg_balances} b
                join snapshot s on b.balance_on = s.balance_on
                left join {stg_products} p using (product_id)
                group by b.customer_id
            )"""
        holding_columns = """(select balance_on from snapshot) as balance_on,
               coalesce(h.aum_cny, 0)::decimal(18, 2) as aum_cny,
               coalesce(h.loan_balance_cny, 0)::decimal(18, 2) as loan_balance_cny,
               coalesce(h.products_held, 0) as products_held"""
        holding_join = "left join holdings h using (customer_id)"
    else:
        holdings = "no_holdings as (select 1)"
        holding_columns = """null::date as balance_on, null::decimal(18, 2) as aum_cny,
               null::decimal(18, 2) as loan_balance_cny, null::bigint as products_held"""
        holding_join = ""
    return con.sql(
        f"""
        with population as ({population}),
        recent as (
            select customer_id, amount_cny, direction,
                   date_diff('day', transaction_at::date, $as_of) as days_ago
            from {stg_transactions}
            where transaction_at::date <= $as_of
              and transaction_at::date > $as_of - {max(windows)}
        ),
        windowed as (
            select customer_id, {window_columns}
            from recent
            group by customer_id
        ),
        last_seen as (
            select customer_id, max(transaction_at)::date as last_txn_on
            from {stg_transactions}
            where transaction_at::date <= $as_of
            group by customer_id
        ),
        {holdings}
        select p.customer_id, $as_of::date as as_of,
               p.age_years, p.tenure_days, p.gender, p.occupation, p.marital_status,
               p.children_count,
               {filled},
               l.last_txn_on,
               date_diff('day', l.last_txn_on, $as_of) as days_since_last_txn,
               {holding_columns}
        from population p
        left join windowed t using (customer_id)
        left join last_seen l using (customer_id)
        {holding_join}
        order by p.customer_id
        """,
        params={"as_of": as_of},
    )
