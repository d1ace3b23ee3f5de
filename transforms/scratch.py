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
