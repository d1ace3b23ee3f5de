"""Scratch tables: the intermediate temp tables (and registered Arrow frames) a transform makes
on the way to its output, e.g. to keep each query small enough to spill (one large join or
aggregate at a time).

A transform names them `<stage>__<part>`; whoever materialises the transform's result drops
them with `drop_scratch` afterwards (the runner after each stage), so they never outlive the
stage that made them: DuckDB's temp tables hold memory or temp files, registered frames hold
Python memory that DuckDB's memory limit does not bound.
"""

from __future__ import annotations

import duckdb


def scratch_table(stage: str, part: str) -> str:
    return f"{stage}__{part}"


def drop_scratch(con: duckdb.DuckDBPyConnection, stage: str) -> list[str]:
    """Drop the scratch tables and views of `stage` and release its registered frames; returns
    their names."""
    prefix = scratch_table(stage, "")
    found = con.execute(
        "select table_name, 'table' from duckdb_tables() "
        "where temporary and starts_with(table_name, $prefix) "
        "union all select view_name, 'view' from duckdb_views() "
        "where temporary and not internal and starts_with(view_name, $prefix) order by 1",
        {"prefix": prefix},
    ).fetchall()
    for name, kind in found:
        con.execute(f"drop {kind} {name}")  # dropping a registered frame's view releases it
    return [name for name, _ in found]


def align(con: duckdb.DuckDBPyConnection, population: str, target: str, source: str) -> None:
    """Materialise `source` (a table, or a parenthesised query, unique on customer_id) as the
    scratch table `target`: one row per row of `population` (a table in customer_id order), in
    that order, with the source's columns null where it has no row.

    Tables aligned to one population are put side by side with POSITIONAL JOIN, which needs no
    hash table, so a wide table is built one spilling join at a time. Joining the population to
    every source in one query needs all their hash tables in memory together, and that failed
    instead of spilling at 5M customers (customer_features under 8 GB, segments under 2 GB)."""
    con.execute(
        f"""
        create or replace temp table {target} as
        select p.customer_id, x.* exclude (customer_id)
        from {population} p left join {source} x using (customer_id)
        order by p.customer_id
        """
    )


def check_aligned(
    con: duckdb.DuckDBPyConnection, stage: str, population: str, aligned: list[str]
) -> None:
    """Raise unless every row of the `aligned` tables has the population's customer_id at the
    same position (order is kept by preserve_insertion_order; a mismatch is never expected)."""
    tables = [(table, f"a{i}") for i, table in enumerate(aligned)]
    misaligned = con.execute(
        f"select count(*) from {population} p "
        + " ".join(f"positional join {table} {alias}" for table, alias in tables)
        + " where "
        + " or ".join(f"{alias}.customer_id is distinct from p.customer_id" for _, alias in tables)
    ).fetchall()[0][0]
    if misaligned:
        raise RuntimeError(f"{stage}: {misaligned} rows out of line between its parts")
