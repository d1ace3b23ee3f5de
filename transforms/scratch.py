"""Scratch tables: the intermediate temp tables a transform materialises to keep each query
small enough to spill (one large join or aggregate at a time).

A transform names them `<stage>__<part>`; whoever materialises the transform's result drops
them with `drop_scratch` afterwards (the runner after each stage), so they never outlive the
stage that made them.
"""

from __future__ import annotations

import duckdb


def scratch_table(stage: str, part: str) -> str:
    return f"{stage}__{part}"


def drop_scratch(con: duckdb.DuckDBPyConnection, stage: str) -> list[str]:
    """Drop the scratch tables of `stage`; returns their names."""
    names = [
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where temporary "
            "and starts_with(table_name, ?) order by table_name",
            [scratch_table(stage, "")],
        ).fetchall()
    ]
    for name in names:
        con.execute(f"drop table {name}")
    return names
