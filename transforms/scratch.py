"""Scratch tables: the intermediate temp tables (and registered Arrow frames) a transform makes
on the way to its output, e.g. to keep each query small enough to spill (one large join or
aggregate at a time).

A transform names them `<stage>__<part>` and makes them with `materialise`; whoever
materialises the transform's result drops them with `drop_scratch` afterwards (the runner after
each stage), so they never outlive the stage that made them: DuckDB's temp tables hold memory or
temp files, registered frames hold Python memory that DuckDB's memory limit does not bound.

They are TEMP tables. As tables of the run's database file (stored compressed) they put
customer_features' parts side by side faster at 5M when timed alone (21.0 s against 38.1 s),
but the stage took the same time in the runner (121.9 and 122.5 s against 124.5 and 117.8 s).
In an in-memory database attached with COMPRESS, checkpointed after each table, the same step
took 22.3 s against 39.2 s timed alone, but the stage was slower in the runner (124.8 and
122.2 s against 111.5, 109.9 and 113.7 s): the checkpoints cost more CPU than the spilling.
What did help: narrower column types in the parts (see customer_features' `_count`).
"""

from __future__ import annotations

import duckdb


def scratch_table(stage: str, part: str) -> str:
    return f"{stage}__{part}"


def materialise(
    con: duckdb.DuckDBPyConnection, table: str, sql: str, parameters: dict | None = None
) -> None:
    """(Re)create the scratch table `table` as the result of `sql`."""
    _drop(con, table)  # from an earlier call on this connection, as a table or a view
    con.execute(f"create temp table {table} as {sql}", parameters or {})


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


def _drop(con: duckdb.DuckDBPyConnection, name: str) -> None:
    for kind in con.execute(
        "select 'table' from duckdb_tables() where temporary and table_name = $name "
        "union all select 'view' from duckdb_views() where temporary and view_name = $name",
        {"name": name},
    ).fetchall():
        con.execute(f"drop {kind[0]} {name}")


def align(con: duckdb.DuckDBPyConnection, population: str, target: str, source: str) -> bool:
    """Make `target` hold `source` (a table, or a parenthesised query, unique on customer_id)
    aligned to `population` (a table in customer_id order): one row per population row, in
    that order, with the source's columns null where it has no row.

    A source already in line (the same customer_ids in the same order, as a stage's output
    usually is) becomes a scratch view of it, at the cost of one scan of both customer_ids;
    any other is materialised by one left join and sort. Returns whether it was copied (else
    `target` reads `source`, which must then outlive it).

    Tables aligned to one population are put side by side with POSITIONAL JOIN, which needs no
    hash table, so a wide table is built one spilling join at a time. Joining the population to
    every source in one query needs all their hash tables in memory together, and that failed
    instead of spilling at 5M customers (customer_features under 8 GB, segments under 2 GB)."""
    _drop(con, target)  # from an earlier call on this connection, as a table or a view
    out_of_line = con.execute(
        f"select 1 from {population} p positional join {source} x "
        "where p.customer_id is distinct from x.customer_id limit 1"
    ).fetchall()
    if not out_of_line:
        con.execute(f"create temp view {target} as select * from {source}")
        return False
    materialise(
        con,
        target,
        f"""
        select p.customer_id, x.* exclude (customer_id)
        from {population} p left join {source} x using (customer_id)
        order by p.customer_id
        """,
    )
    return True


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
