"""Per-customer aggregates over windows of days, aligned to a population: the counts, sums and
maxima behind customer_features' transaction and event windows.

Each `WindowAggregate` reads the rows whose age (`days_ago`, 0 on as_of) falls in its window,
optionally only those whose columns take given values, and counts them, or sums or takes the
maximum of a money column, or takes the latest: the smallest days_ago (a customer's last
transaction, read in the same pass instead of by another GROUP BY over the rows). The rows
come from a query with `customer_id`, `days_ago`, the money columns named by the aggregates
(decimal(18, 2)) and the columns they filter on.

`aggregate_windows` builds the result as a scratch table with one row per population row, in
the population's order (ready for POSITIONAL JOIN): customer_id, then one column per aggregate,
counts and latest days as integer, sums and maxima as decimal(18, 2). Counts and sums are 0
when no row matches (a customer without rows included), maxima and latest days null: a null
sum would cost polars another pass per sum (0.63 s against 0.44 s per slice of 245,760
customers).

How, and why not one DuckDB GROUP BY: DuckDB joins the rows to their customer's position in
the population and sorts them by it into a scratch table (a sort spills past its memory
limit); polars then aggregates one slice of customers at a time, read by zone map from that
table. On consecutive keys polars' group-by stays in cache; DuckDB's hash aggregate updates
each aggregate's state once per row at a random place among the customers. At 5M customers
(51.6 M transaction rows in 365 days, 86 aggregates) DuckDB's GROUP BY took 27 to 28 s and
aligning its result to the population 8.5 s more; here, 21.1 s in all: the sort 8.1 s,
reading the slices 1.1 s, polars 9.3 s, the inserts 2.6 s. DuckDB's time grows with the
number of aggregates (3.5 s for a count alone, 8.0 s for 23, 29.3 s for 92) and did not
improve with the filter columns as integer codes. Unsorted, polars took 4.4 s at 1M customers
against 1.2 s sorted. Python holds one slice at a time, so its memory stays bounded by the
slice size. polars runs on its own thread pool (all cores), whatever engine.threads says.

`plain_aggregates` renders the same aggregates as SQL for one GROUP BY, the reference the tests
compare `aggregate_windows` with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb
import polars as pl

from transforms.scratch import materialise
from transforms.staging import literal, quote

MONEY = "decimal(18, 2)"
# Customers aggregated per slice (two of DuckDB's row groups): at 5M customers about 2.5 M
# transaction rows (60 MB) in and 170 MB of aggregates out; 21 slices, whose fixed costs
# (two queries, an insert) are small against the 0.4 s polars spends on each.
SLICE_CUSTOMERS = 245_760


@dataclass(frozen=True)
class WindowAggregate:
    """`how` over the rows with first_day <= days_ago < last_day whose columns in `where` take
    one of the listed values; `value` is the money column summed or maximised."""

    name: str
    how: Literal["count", "sum", "max", "latest"]
    days: tuple[int, int]
    where: tuple[tuple[str, tuple[str | bool, ...]], ...] = ()
    value: str | None = None

    def __post_init__(self) -> None:
        if (self.how in ("count", "latest")) != (self.value is None):
            raise ValueError(
                f"{self.name}: a count or latest takes no value; a sum or max needs one"
            )


def _sql_condition(aggregate: WindowAggregate) -> str:
    first, last = aggregate.days
    terms = [f"days_ago >= {first}"] if first > 0 else []
    terms.append(f"days_ago < {last}")
    for column, values in aggregate.where:
        listed = [str(v).lower() if isinstance(v, bool) else literal(v) for v in values]
        if len(listed) == 1:
            terms.append(f"{quote(column)} = {listed[0]}")
        else:
            terms.append(f"{quote(column)} in ({', '.join(listed)})")
    return " and ".join(terms)


def plain_aggregates(aggregates: Sequence[WindowAggregate]) -> str:
    """The aggregates as SQL select items over the rows, for a GROUP BY customer_id; with the
    population left joined to the rows, the same result as `aggregate_windows`."""
    items = []
    for a in aggregates:
        condition = _sql_condition(a)
        if a.how == "count":
            items.append(f"count(case when {condition} then 1 end)::integer as {a.name}")
        elif a.how == "latest":
            items.append(f"min(case when {condition} then days_ago end)::integer as {a.name}")
        else:
            picked = f"{a.how}(case when {condition} then {a.value} end)"
            picked = f"coalesce({picked}, 0)" if a.how == "sum" else picked
            items.append(f"{picked}::{MONEY} as {a.name}")
    return ",\n".join(items)


def _codes(aggregates: Sequence[WindowAggregate]) -> dict[str, dict[str, int]]:
    """A small integer per text value each filter column is compared with: the sorted rows
    carry codes, not strings (other values become null and match nothing, as in SQL)."""
    values: dict[str, set[str]] = {}
    for a in aggregates:
        for column, allowed in a.where:
            if not all(isinstance(v, bool) for v in allowed):
                values.setdefault(column, set()).update(str(v) for v in allowed)
    return {column: {v: i for i, v in enumerate(sorted(vs))} for column, vs in values.items()}


def _polars_aggregates(
    aggregates: Sequence[WindowAggregate], codes: dict[str, dict[str, int]]
) -> list[pl.Expr]:
    expressions = []
    for a in aggregates:
        first, last = a.days
        condition = pl.col("days_ago") < last
        if first > 0:
            condition = condition & (pl.col("days_ago") >= first)
        for column, allowed in a.where:
            wanted = [codes[column][str(v)] for v in allowed] if column in codes else list(allowed)
            condition = condition & (
                pl.col(column) == wanted[0] if len(wanted) == 1 else pl.col(column).is_in(wanted)
            )
        if a.how == "count":
            expressions.append(condition.sum().cast(pl.Int32).alias(a.name))
        elif a.how == "latest":
            latest = pl.when(condition).then(pl.col("days_ago")).min()
            expressions.append(latest.cast(pl.Int32).alias(a.name))
        else:
            picked = pl.when(condition).then(pl.col(a.value))
            expressions.append((picked.sum() if a.how == "sum" else picked.max()).alias(a.name))
    return expressions


def aggregate_windows(
    con: duckdb.DuckDBPyConnection,
    *,
    target: str,
    population: str,
    rows: str,
    parameters: dict,
    aggregates: Sequence[WindowAggregate],
) -> None:
    """Make the scratch table `target`: `aggregates` over `rows` (a query; `parameters` bind its
    $names, and DuckDB refuses one it does not use) per customer of `population` (a table in
    customer_id order), aligned to it."""
    codes = _codes(aggregates)
    money = sorted({a.value for a in aggregates if a.value is not None})
    filters = sorted({column for a in aggregates for column, _ in a.where})
    carried = ["days_ago::integer as days_ago"]
    # money as integer cents: exact, and summed by polars at native speed
    carried += [f"({quote(m)} * 100)::bigint as {quote(m)}" for m in money]
    for column in filters:
        if column in codes:
            cases = " ".join(f"when {literal(v)} then {i}" for v, i in codes[column].items())
            carried.append(f"case {quote(column)} {cases} end::usmallint as {quote(column)}")
        else:
            carried.append(quote(column))
    sorted_rows = f"{target}_rows"
    materialise(
        con,
        sorted_rows,
        f"""
        -- a customer without rows keeps one, of nulls: every position gets its group
        select p.row_index, r.* exclude (customer_id)
        from (select customer_id, rowid as row_index from {population}) p
        left join (select customer_id, {", ".join(carried)} from ({rows})) r using (customer_id)
        order by p.row_index
        """,
        parameters,
    )
    expressions = _polars_aggregates(aggregates, codes)
    columns = ", ".join(
        quote(a.name)
        if _type(a) == "integer"
        else f"({quote(a.name)} * 0.01::decimal(3, 2))::{MONEY} as {quote(a.name)}"
        for a in aggregates
    )
    materialise(
        con,
        target,
        "select customer_id, "
        + ", ".join(f"null::{_type(a)} as {quote(a.name)}" for a in aggregates)
        + f" from {population} where false",
    )
    ((total,),) = con.execute(f"select count(*) from {population}").fetchall()
    for start in range(0, total, SLICE_CUSTOMERS):
        end = min(start + SLICE_CUSTOMERS, total)
        slice_rows = pl.from_arrow(
            con.sql(
                f"select * from {sorted_rows} where row_index >= $start and row_index < $end",
                params={"start": start, "end": end},
            ).to_arrow_table()
        )
        customers = con.sql(
            f"select customer_id from {population} where rowid >= $start and rowid < $end "
            "order by rowid",
            params={"start": start, "end": end},
        ).to_arrow_table()
        aggregated = (
            slice_rows.lazy()
            .group_by("row_index", maintain_order=True)  # the input is in population order
            .agg(expressions)
            .collect()
            .rechunk()  # one chunk per column: DuckDB inserts it in half the time
        )
        positions = aggregated["row_index"]
        if not positions.equals(
            pl.int_range(start, end, dtype=positions.dtype, eager=True), check_names=False
        ):
            raise RuntimeError(f"{target}: the aggregates of {start}..{end} are out of line")
        aligned = (
            aggregated.drop("row_index")
            .to_arrow()
            .add_column(0, "customer_id", customers["customer_id"])
        )
        con.register("day_windows_slice", aligned)
        try:
            con.execute(
                f"insert into {target} select customer_id, {columns} from day_windows_slice"
            )
        finally:
            con.unregister("day_windows_slice")
    con.execute(f"drop table {sorted_rows}")


def _type(aggregate: WindowAggregate) -> str:
    return MONEY if aggregate.value is not None else "integer"  # counts and latest days
