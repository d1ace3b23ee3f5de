"""customer_features: the 360-degree profile every segment dimension and model starts from.

Grain: one row per customer_id and as_of. The customers are those on the latest customers
snapshot on or before as_of and opened by then; without a customers source, every customer
with a transaction. Everything is point-in-time: only rows dated on or before as_of are read.

Columns by group (W = customer_features.windows_days, default 30/90/365; E = event_windows_days,
default 30/90; T = trend_window_days, default 90; windows end on as_of inclusive). A group whose
source is absent is null throughout; with the source present, counts and sums are 0 when the
customer has no rows.

demographics  age_years, tenure_days, gender, occupation, marital_status, children_count,
              opened_on, and the customers columns listed in `extra_attributes` (passed through
              unchanged: e.g. city, income_band, credit_score, or a bank's own columns declared
              in ingest.sources.customers.extra_columns)
transactions  per window W:
                txn_count_<W>d, txn_amount_<W>d_cny, avg_txn_<W>d_cny (null when no txn),
                inflow_count_<W>d, inflow_<W>d_cny, outflow_count_<W>d, outflow_<W>d_cny,
                digital_share_<W>d (share on digital_channels; null when no txn),
                txn_count_<channel>_<W>d for every channel, amount_<category>_<W>d_cny for every
                category of the contract
              last_txn_on, days_since_last_txn (null when never)
              txn_count_recent / txn_count_previous: the last T days and the T days before;
              activity_trend = (recent - previous) / (recent + previous), -1..1, null if both 0
              net_flow_recent_cny, net_flow_previous_cny (inflow - outflow), net_flow_trend_cny
              largest_outflow_30d_cny (0 when none)
              salary_credit_months_90d: calendar months with a salary credit in the last 90 days;
              has_salary_inflow: at least salary_min_months of them
              business_inflow_365d_cny: credits of business_categories in the last 365 days
holdings      balance_on (latest balance snapshot on or before as_of), aum_cny (deposits +
              investments = balance_type asset, never loans), loan_balance_cny,
              aum_avg_cny: AUM averaged over aum_average_days, each snapshot weighted by the days
                until the next one (a snapshot before the window covers its first days; days
                before the customer opened are left out),
              aum_3m_ago_cny / aum_12m_ago_cny: AUM on the latest snapshot 3 / 12 months back,
              aum_change_3m_cny, aum_change_3m_pct, aum_change_12m_cny, aum_change_12m_pct
                (pct null when the earlier AUM was 0 or unknown),
              products_held, products_<family> for every product family (positive balances),
              balance_<family>_cny (the balance per family, loans and cards included),
              product_families_held, non_payment_families_held (families other than deposit and
              card), highest_risk_level_held (asset holdings, R1..R5),
              aum_share_r1 .. aum_share_r5 (share of AUM per product risk level; null if AUM 0),
              risk_asset_share (levels at or above risk_asset_min_level),
              risk_purchases_90d_cny (investment debits into risk-asset products),
              has_business_link (business inflows, or a product of business_product_types)
behaviour     per window E: logins_<E>d, enquiries_<E>d, complaints_<E>d,
              views_<topic>_<E>d and enquiries_<topic>_<E>d for every event topic;
              last_event_on, last_login_on, days_since_last_login,
              days_since_last_activity: since the latest transaction or login (null when neither)
questionnaire risk_score, risk_assessed_on, risk_assessment_age_days, risk_assessment_expired
              (older than questionnaire_valid_months), nps_score, nps_answered_on
              (the latest answer of each type on or before as_of)

How: each group's aggregates are materialised as scratch tables (transforms/scratch.py) aligned
to the population, then put side by side; see the comment in customer_features. The transaction
and event windows (most of the columns) are aggregated by transforms/day_windows.py: polars over
rows sorted by customer, 21 s at 5M customers where one DuckDB GROUP BY and its alignment took
36 s. The same pass finds the last transaction, event and login within the windows' lookback;
only the customers without one there are looked up in the older rows.

Checks: customer_id unique and not null; counts and amounts >= 0; shares within 0..1.
The coverage of each group is measured by `feature_coverage` from FEATURE_GROUPS below.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb

from pipeline.config import CustomerFeaturesParams
from pipeline.expectations import Check, between
from transforms.day_windows import WindowAggregate, aggregate_windows, plain_aggregates
from transforms.scratch import align, check_aligned, materialise, scratch_table
from transforms.sources import (
    CATEGORIES,
    CHANNELS,
    EVENT_TOPICS,
    PRODUCT_FAMILIES,
    RISK_LEVELS,
    SOURCES,
)
from transforms.staging import literal, quote

# What "the customer has data in this group" means, for the coverage report.
FEATURE_GROUPS: dict[str, str] = {
    "demographics": "age_years is not null and occupation is not null "
    "and marital_status is not null",
    "transactions": "last_txn_on is not null",
    "holdings": "products_held > 0",
    "behaviour": "last_event_on is not null",
    "questionnaire": "risk_score is not null",
}

_SQL_TYPES = {
    "varchar": "varchar",
    "date": "date",
    "timestamp": "timestamp",
    "integer": "bigint",
    "decimal": "decimal(18, 2)",
    "boolean": "boolean",
}
_MONEY = "decimal(18, 2)"


def _in_list(values) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")"


def empty_source(name: str, extra: tuple[str, ...] = ()) -> str:
    """A typed, empty stand-in for an absent staged source, so one query serves both cases."""
    columns = [f"null::{_SQL_TYPES[c.type]} as {quote(c.name)}" for c in SOURCES[name].columns]
    known = {c.name for c in SOURCES[name].columns}
    columns += [f"null::varchar as {quote(e)}" for e in extra if e not in known]
    return f"(select {', '.join(columns)} where false)"


def _when(present: bool, expression: str, default: str | None = None) -> str:
    """The expression when the source is present (defaulted when the customer has no rows);
    a null of the same type when the source is absent."""
    value = f"coalesce({expression}, {default})" if default is not None else expression
    return f"case when {'true' if present else 'false'} then {value} end"


def _total(condition: str, value: str = "amount_cny") -> str:
    """A conditional sum, narrowed to the money type (a plain sum widens it to 128 bits, twice
    the memory for every later join and sort of the part)."""
    return f"sum(case when {condition} then {value} end)::{_MONEY}"


def _count(condition: str) -> str:
    """A conditional count, narrowed to 32 bits (half the memory of a part's count columns);
    the output columns are cast back to bigint."""
    return f"count(case when {condition} then 1 end)::integer"


def _transaction_aggregates(
    params: CustomerFeaturesParams,
) -> tuple[list[WindowAggregate], list[str]]:
    """The aggregates over transaction rows (the `txn_windows` part), and the final column
    expressions over that part's alias `t`."""
    aggregates, columns = [], []

    def count(name: str, days: tuple[int, int], *where) -> None:
        aggregates.append(WindowAggregate(name, "count", days, tuple(where)))

    def total(name: str, days: tuple[int, int], *where, how: str = "sum") -> None:
        aggregates.append(WindowAggregate(name, how, days, tuple(where), value="amount_cny"))

    credit, debit = ("is_credit", (True,)), ("is_credit", (False,))
    for w in params.windows_days:
        within = (0, w)
        count(f"txn_count_{w}d", within)
        total(f"txn_amount_{w}d_cny", within)
        count(f"inflow_count_{w}d", within, credit)
        total(f"inflow_{w}d_cny", within, credit)
        count(f"outflow_count_{w}d", within, debit)
        total(f"outflow_{w}d_cny", within, debit)
        count(f"digital_count_{w}d", within, ("channel", tuple(params.digital_channels)))
        for c in CHANNELS:
            count(f"txn_count_{c}_{w}d", within, ("channel", (c,)))
        for k in CATEGORIES:
            total(f"amount_{k}_{w}d_cny", within, ("category", (k,)))
        columns += [
            f"coalesce(t.txn_count_{w}d, 0)::bigint as txn_count_{w}d",
            f"coalesce(t.txn_amount_{w}d_cny, 0)::{_MONEY} as txn_amount_{w}d_cny",
            f"round(t.txn_amount_{w}d_cny / nullif(t.txn_count_{w}d, 0), 2)::{_MONEY} "
            f"as avg_txn_{w}d_cny",
            f"coalesce(t.inflow_count_{w}d, 0)::bigint as inflow_count_{w}d",
            f"coalesce(t.inflow_{w}d_cny, 0)::{_MONEY} as inflow_{w}d_cny",
            f"coalesce(t.outflow_count_{w}d, 0)::bigint as outflow_count_{w}d",
            f"coalesce(t.outflow_{w}d_cny, 0)::{_MONEY} as outflow_{w}d_cny",
            f"t.digital_count_{w}d / nullif(t.txn_count_{w}d, 0) as digital_share_{w}d",
        ]
        columns += [
            f"coalesce(t.txn_count_{c}_{w}d, 0)::bigint as txn_count_{c}_{w}d" for c in CHANNELS
        ]
        columns += [
            f"coalesce(t.amount_{k}_{w}d_cny, 0)::{_MONEY} as amount_{k}_{w}d_cny"
            for k in CATEGORIES
        ]
    trend = params.trend_window_days
    recent, previous = (0, trend), (trend, 2 * trend)
    count("txn_count_recent", recent)
    count("txn_count_previous", previous)
    total("inflow_recent", recent, credit)
    total("outflow_recent", recent, debit)
    total("inflow_previous", previous, credit)
    total("outflow_previous", previous, debit)
    total("largest_outflow_30d", (0, 30), debit, how="max")
    total(
        "business_inflow_365d",
        (0, 365),
        credit,
        ("category", tuple(params.business_categories)),
    )

    # the last transaction when it falls in the lookback (else read from older rows: `last_txn`)
    aggregates.append(WindowAggregate("latest_days_ago", "latest", (0, _lookback(aggregates))))

    def net(period: str) -> str:
        return f"(coalesce(t.inflow_{period}, 0) - coalesce(t.outflow_{period}, 0))"

    columns += [
        "coalesce(t.txn_count_recent, 0)::bigint as txn_count_recent",
        "coalesce(t.txn_count_previous, 0)::bigint as txn_count_previous",
        "(t.txn_count_recent - t.txn_count_previous)"
        " / nullif(t.txn_count_recent + t.txn_count_previous, 0) as activity_trend",
        f"{net('recent')}::{_MONEY} as net_flow_recent_cny",
        f"{net('previous')}::{_MONEY} as net_flow_previous_cny",
        f"({net('recent')} - {net('previous')})::{_MONEY} as net_flow_trend_cny",
        f"coalesce(t.largest_outflow_30d, 0)::{_MONEY} as largest_outflow_30d_cny",
        "coalesce(s.salary_credit_months_90d, 0) as salary_credit_months_90d",
        f"coalesce(s.salary_credit_months_90d, 0) >= {params.salary_min_months}"
        " as has_salary_inflow",
        f"coalesce(t.business_inflow_365d, 0)::{_MONEY} as business_inflow_365d_cny",
    ]
    return aggregates, columns


def _event_aggregates(
    params: CustomerFeaturesParams, present: bool
) -> tuple[list[WindowAggregate], list[str]]:
    aggregates, columns = [], []
    for w in params.event_windows_days:
        for kind, event_type in (
            ("logins", "login"),
            ("enquiries", "enquiry"),
            ("complaints", "complaint"),
        ):
            name = f"{kind}_{w}d"
            aggregates.append(
                WindowAggregate(name, "count", (0, w), (("event_type", (event_type,)),))
            )
            columns.append(f"{_when(present, f'e.{name}', '0')}::bigint as {name}")
        for topic in EVENT_TOPICS:
            for kind, event_type in (("views", "page_view"), ("enquiries", "enquiry")):
                name = f"{kind}_{topic}_{w}d"
                where = (("event_type", (event_type,)), ("topic", (topic,)))
                aggregates.append(WindowAggregate(name, "count", (0, w), where))
                columns.append(f"{_when(present, f'e.{name}', '0')}::bigint as {name}")
    # the last event and login when they fall in the lookback (else: `last_event`)
    lookback = (0, _lookback(aggregates))
    aggregates.append(WindowAggregate("latest_days_ago", "latest", lookback))
    login = (("event_type", ("login",)),)
    aggregates.append(WindowAggregate("latest_login_days_ago", "latest", lookback, login))
    return aggregates, columns


def _lookback(aggregates: list[WindowAggregate]) -> int:
    """Days of rows the aggregates read back from as_of."""
    return max(a.days[1] for a in aggregates)


def customer_features(
    con: duckdb.DuckDBPyConnection,
    *,
    stg_transactions: str,
    stg_customers: str | None,
    stg_balances: str | None,
    stg_products: str | None,
    stg_events: str | None,
    stg_questionnaires: str | None,
    params: CustomerFeaturesParams,
    as_of: date,
    plain_windows: bool = False,
) -> duckdb.DuckDBPyRelation:
    has_customers = stg_customers is not None
    has_holdings = stg_balances is not None and stg_products is not None
    has_events = stg_events is not None
    extra = tuple(params.extra_attributes)
    customers = stg_customers or empty_source("customers", extra)
    balances = stg_balances or empty_source("balances")
    products = stg_products or empty_source("products")
    events = stg_events or empty_source("events")
    questionnaires = stg_questionnaires or empty_source("questionnaires")

    txn_aggregates, txn_columns = _transaction_aggregates(params)
    event_aggregates, event_columns = _event_aggregates(params, has_events)
    # days of rows the window parts read; the older rows are read for last dates alone
    txn_lookback, event_lookback = _lookback(txn_aggregates), _lookback(event_aggregates)
    if has_customers:
        population = f"""
            select customer_id, opened_on,
                   date_diff('year', birth_on, $as_of)
                       - (strftime(birth_on, '%m%d') > strftime($as_of, '%m%d'))::int as age_years,
                   date_diff('day', opened_on, $as_of) as tenure_days,
                   gender, occupation, marital_status, children_count
                   {"".join(f", {quote(c)}" for c in extra)}
            from {customers}
            where opened_on <= $as_of"""
    else:
        population = f"""
            select distinct customer_id, null::date as opened_on, null::bigint as age_years,
                   null::bigint as tenure_days, null::varchar as gender,
                   null::varchar as occupation, null::varchar as marital_status,
                   null::bigint as children_count
                   {"".join(f", null::varchar as {quote(c)}" for c in extra)}
            from {stg_transactions}
            where transaction_at::date <= $as_of"""
    asset = "balance_type = 'asset'"
    family_aggregates = ", ".join(
        f"{_count(f'balance_cny > 0 and product_family = {literal(f)}')} as products_{f}, "
        f"coalesce({_total(f'product_family = {literal(f)}', 'balance_cny')}, 0) as balance_{f}"
        for f in PRODUCT_FAMILIES
    )
    level_aggregates = ", ".join(
        f"coalesce({_total(f'{asset} and risk_level = {literal(level)}', 'balance_cny')}, 0) "
        f"as aum_{level.lower()}"
        for level in RISK_LEVELS
    )
    family_columns = [
        f"{_when(has_holdings, f'h.products_{f}', '0')}::bigint as products_{f}, "
        f"{_when(has_holdings, f'h.balance_{f}', '0')}::{_MONEY} as balance_{f}_cny"
        for f in PRODUCT_FAMILIES
    ]
    families_held = " + ".join(f"(coalesce(h.products_{f}, 0) > 0)::int" for f in PRODUCT_FAMILIES)
    non_payment = " + ".join(
        f"(coalesce(h.products_{f}, 0) > 0)::int"
        for f in PRODUCT_FAMILIES
        if f not in ("deposit", "card")
    )
    level_columns = [
        _when(has_holdings, f"h.aum_{level.lower()} / nullif(h.aum, 0)")
        + f" as aum_share_{level.lower()}"
        for level in RISK_LEVELS
    ]
    average_start = as_of - timedelta(days=params.aum_average_days - 1)
    values = {
        "as_of": as_of,
        "average_start": average_start,
        "risk_min": params.risk_asset_min_level,
    }

    def scratch(part: str) -> str:
        return scratch_table("customer_features", part)

    def materialise_part(part: str, sql: str) -> None:
        materialise(con, scratch(part), sql, {k: v for k, v in values.items() if f"${k}" in sql})

    # Shared steps, each materialised once: the population in customer_id order and the
    # balance dates (read back: few rows).
    materialise_part("population", f"{population} order by customer_id")
    materialise_part(
        "snapshot_dates",
        f"select distinct balance_on from {balances} where balance_on <= $as_of",
    )
    snapshot_dates = scratch("snapshot_dates")
    materialise_part(
        "marks",
        f"""
        select max(balance_on) as now_on,
               max(balance_on) filter (where balance_on <= $as_of - interval 3 month)
                   as three_months_on,
               max(balance_on) filter (where balance_on <= $as_of - interval 12 month)
                   as twelve_months_on
        from {snapshot_dates}
        """,
    )
    materialise_part(
        "average_dates",
        f"""
        -- each snapshot stands for the days until the next one (or as_of)
        select balance_on, greatest(balance_on, $average_start) as covers_from,
               coalesce(lead(balance_on) over (order by balance_on), $as_of + 1)
                   - greatest(balance_on, $average_start) as weight_days
        from {snapshot_dates}
        where balance_on >= coalesce(
            (select max(balance_on) from {snapshot_dates} where balance_on <= $average_start),
            $average_start)
        """,
    )
    marks, average_dates = scratch("marks"), scratch("average_dates")
    values["now_on"], three_months_on, twelve_months_on = con.execute(
        f"select now_on, three_months_on, twelve_months_on from {marks}"
    ).fetchall()[0]
    averaged = con.execute(
        f"select balance_on, covers_from, weight_days from {average_dates} order by balance_on"
    ).fetchall()
    # Each customer's AUM on every balance date these features read (the averaged dates, 3 and
    # 12 months back), one column per date: one group per customer, summed straight from
    # balances x products. A row per customer and date took 9.0 s at 5M customers (30 M
    # groups), then 10.7 s more to average it over a cross join of the dates.
    aum_dates = sorted({d for d, _, _ in averaged} | {three_months_on, twelve_months_on} - {None})
    aum_on = {day: f"aum_{day:%Y%m%d}" for day in aum_dates}
    by_date = ",\n".join(
        _total(f"p.balance_type = 'asset' and b.balance_on = DATE '{day}'", "b.balance_cny")
        + f" as {aum_on[day]}"
        for day in aum_dates
    )

    # aum_avg: the averaged dates each weighted by the days they cover, leaving out those
    # wholly before the customer opened
    def over_open_dates(term: str) -> str:  # sum of `term` ({aum}, {days}) over those dates
        return " + ".join(
            f"coalesce(case when p.opened_on is null "
            f"or DATE '{covers}' + {int(days)} > p.opened_on "
            f"then {term.format(aum=f'coalesce(a.{aum_on[day]}, 0)', days=int(days))} end, 0)"
            for day, covers, days in averaged
        )

    aum_avg = (
        f"({over_open_dates('{aum} * {days}')}) / nullif({over_open_dates('{days}')}, 0)"
        if averaged
        else "null"
    )

    def aum_at(day: date | None) -> str:
        return f"a.{aum_on[day]}" if day is not None else f"null::{_MONEY}"

    # The window parts: rows with their age in days, aggregated per customer by day_windows.
    window_parts = {
        "txn_windows": (
            f"""
            select customer_id, amount_cny, direction = 'credit' as is_credit, channel,
                   category, $as_of - transaction_at::date as days_ago
            from {stg_transactions}
            where transaction_at::date <= $as_of
              and transaction_at::date > $as_of - {txn_lookback}""",
            txn_aggregates,
        ),
        "event_windows": (
            f"""
            select customer_id, event_type, topic, $as_of - event_at::date as days_ago
            from {events}
            where event_at::date <= $as_of
              and event_at::date > $as_of - {event_lookback}""",
            event_aggregates,
        ),
    }
    # One part per source aspect, each grouped by customer_id.
    parts = {
        "salary": f"""
            select customer_id,
                   count(distinct date_trunc('month', transaction_at)) as salary_credit_months_90d
            from {stg_transactions}
            where transaction_at::date <= $as_of and transaction_at::date > $as_of - 90
              and direction = 'credit' and category in {_in_list(params.salary_categories)}
            group by customer_id""",
        # the last transaction of the customers with none in txn_windows' lookback, from the
        # older rows (at 5M, 0.4 M customers: 3.9 s where all customers' took 7.8 s)
        "last_txn": f"""
            select customer_id, max(transaction_at)::date as last_txn_on
            from {stg_transactions}
            where transaction_at::date <= $as_of - {txn_lookback}
              and customer_id in (
                  select customer_id from {scratch("txn_windows")} where latest_days_ago is null)
            group by customer_id""",
        "risk_purchases": f"""
            select t.customer_id, sum(t.amount_cny) as risk_purchases_90d
            from {stg_transactions} t
            join {products} p using (product_id)
            where t.transaction_at::date <= $as_of and t.transaction_at::date > $as_of - 90
              and t.category = 'investment' and t.direction = 'debit'
              and p.risk_level >= $risk_min
            group by t.customer_id""",
        "holdings": f"""
            select customer_id,
                   coalesce({_total(asset, "balance_cny")}, 0) as aum,
                   coalesce({_total("balance_type = 'liability'", "balance_cny")}, 0) as loans,
                   count(*) filter (where balance_cny > 0) as products_held,
                   {family_aggregates},
                   {level_aggregates},
                   max(risk_level) filter (where balance_type = 'asset' and balance_cny > 0)
                       as highest_risk_level_held,
                   coalesce({_total(f"{asset} and risk_level >= $risk_min", "balance_cny")}, 0)
                       as risk_assets,
                   count(*) filter (where balance_cny > 0 and product_type in
                       {_in_list(params.business_product_types)}) as business_products
            from (
                select b.customer_id, p.balance_type, p.product_family, p.product_type,
                       p.risk_level, b.balance_cny
                from {balances} b
                join {products} p using (product_id)
                where b.balance_on = $now_on
            )
            group by customer_id""",
        "aum_by_date": f"""
            select b.customer_id, {by_date}
            from {balances} b
            join {products} p using (product_id)
            where b.balance_on in ({", ".join(f"DATE '{d}'" for d in aum_dates)})
            group by b.customer_id"""
        if aum_dates
        else f"select customer_id from {balances} where false",
        # likewise the last event and login before event_windows' lookback (1.5 M customers
        # without a login in it: 5.9 s where all customers' took 7.6 s)
        "last_event": f"""
            select customer_id, max(event_at)::date as last_event_on,
                   max(event_at) filter (where event_type = 'login')::date as last_login_on
            from {events}
            where event_at::date <= $as_of - {event_lookback}
              and customer_id in (
                  select customer_id from {scratch("event_windows")}
                  where latest_login_days_ago is null)
            group by customer_id""",
        "risk_answers": f"""
            select customer_id,
                   arg_max(risk_score, strftime(answered_on, '%Y%m%d') || questionnaire_id)
                       as risk_score,
                   max(answered_on) as risk_assessed_on
            from {questionnaires}
            where questionnaire_type = 'risk_assessment' and risk_score is not null
              and answered_on <= $as_of
            group by customer_id""",
        "nps_answers": f"""
            select customer_id,
                   arg_max(nps_score, strftime(answered_on, '%Y%m%d') || questionnaire_id)
                       as nps_score,
                   max(answered_on) as nps_answered_on
            from {questionnaires}
            where questionnaire_type = 'satisfaction' and nps_score is not null
              and answered_on <= $as_of
            group by customer_id""",
    }

    # Each part is aggregated, then aligned to the population (transforms/scratch.py: one left
    # join per part, in the population's order; the window parts come out of day_windows
    # already in line), and the parts are put side by side with
    # POSITIONAL JOIN. Every step is one large operator, which spills to disk past the memory
    # limit; aggregating and aligning in one query failed instead (5M customers, 8GB).
    def aggregate_and_align(part: str, sql: str) -> None:
        materialise_part(f"{part}_unaligned", sql)
        if align(con, scratch("population"), scratch(part), scratch(f"{part}_unaligned")):
            con.execute(f"drop table {scratch(f'{part}_unaligned')}")

    for part, (rows, aggregates) in window_parts.items():
        if plain_windows:  # the reference the tests compare day_windows with
            aggregate_and_align(
                part,
                f"select customer_id, {plain_aggregates(aggregates)} "
                f"from ({rows}) group by customer_id",
            )
        else:
            aggregate_windows(
                con,
                target=scratch(part),
                population=scratch("population"),
                rows=rows,
                parameters={"as_of": as_of},
                aggregates=aggregates,
            )
    for part, sql in parts.items():
        aggregate_and_align(part, sql)
    aligned = [*window_parts, *parts]
    check_aligned(con, "customer_features", scratch("population"), [scratch(p) for p in aligned])
    aliases = {
        "txn_windows": "t",
        "salary": "s",
        "last_txn": "l",
        "risk_purchases": "r",
        "holdings": "h",
        "aum_by_date": "a",
        "event_windows": "e",
        "last_event": "le",
        "risk_answers": "ra",
        "nps_answers": "na",
    }
    aum_3m, aum_12m = aum_at(three_months_on), aum_at(twelve_months_on)
    # in the windows' lookback, else before it
    last_txn_on = "coalesce($as_of - t.latest_days_ago, l.last_txn_on)"
    last_event_on = "coalesce($as_of - e.latest_days_ago, le.last_event_on)"
    last_login_on = "coalesce($as_of - e.latest_login_days_ago, le.last_login_on)"
    return con.sql(
        f"""
        select p.customer_id, $as_of::date as as_of,
               p.age_years, p.tenure_days, p.opened_on, p.gender, p.occupation,
               p.marital_status, p.children_count
               {"".join(f", p.{quote(c)}" for c in extra)},
               {", ".join(txn_columns)},
               {last_txn_on} as last_txn_on,
               $as_of - ({last_txn_on}) as days_since_last_txn,
               {_when(has_holdings, "$now_on::date")} as balance_on,
               {_when(has_holdings, "h.aum", "0")}::{_MONEY} as aum_cny,
               {_when(has_holdings, "h.loans", "0")}::{_MONEY} as loan_balance_cny,
               {_when(has_holdings, f"round({aum_avg}, 2)", "0")}::{_MONEY} as aum_avg_cny,
               {_when(has_holdings, aum_3m)}::{_MONEY} as aum_3m_ago_cny,
               {_when(has_holdings, aum_12m)}::{_MONEY} as aum_12m_ago_cny,
               (coalesce(h.aum, 0) - {aum_3m})::{_MONEY} as aum_change_3m_cny,
               (coalesce(h.aum, 0) - {aum_3m}) / nullif({aum_3m}, 0) as aum_change_3m_pct,
               (coalesce(h.aum, 0) - {aum_12m})::{_MONEY} as aum_change_12m_cny,
               (coalesce(h.aum, 0) - {aum_12m}) / nullif({aum_12m}, 0) as aum_change_12m_pct,
               {_when(has_holdings, "h.products_held", "0")} as products_held,
               {", ".join(family_columns)},
               {_when(has_holdings, families_held)} as product_families_held,
               {_when(has_holdings, non_payment)} as non_payment_families_held,
               h.highest_risk_level_held,
               {", ".join(level_columns)},
               {_when(has_holdings, "h.risk_assets / nullif(h.aum, 0)")} as risk_asset_share,
               {_when(has_holdings, "r.risk_purchases_90d", "0")}::{_MONEY}
                   as risk_purchases_90d_cny,
               coalesce(t.business_inflow_365d, 0) > 0 or coalesce(h.business_products, 0) > 0
                   as has_business_link,
               {", ".join(event_columns)},
               {last_event_on} as last_event_on, {last_login_on} as last_login_on,
               $as_of - ({last_login_on}) as days_since_last_login,
               $as_of - greatest({last_txn_on}, {last_login_on}) as days_since_last_activity,
               ra.risk_score, ra.risk_assessed_on,
               $as_of - ra.risk_assessed_on as risk_assessment_age_days,
               ra.risk_assessed_on <= $as_of - interval {params.questionnaire_valid_months} month
                   as risk_assessment_expired,
               na.nps_score, na.nps_answered_on
        from {scratch("population")} p
        {" ".join(f"positional join {scratch(part)} {aliases[part]}" for part in aligned)}
        """,
        params={"as_of": as_of, "now_on": values["now_on"]},
    )


def expectations(params: CustomerFeaturesParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    counts = [between(f"txn_count_{w}d", 0) for w in params.windows_days]
    return [
        *counts,
        between("aum_cny", 0),
        between("aum_avg_cny", 0),
        between("risk_asset_share", 0, 1),
        between(f"digital_share_{params.windows_days[0]}d", 0, 1),
        between("days_since_last_txn", 0),
    ]
