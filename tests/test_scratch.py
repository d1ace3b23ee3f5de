"""Scratch tables: a stage's intermediate tables and registered frames go when it is done."""

from __future__ import annotations

import gc
import weakref

import duckdb
import pyarrow as pa

from transforms.scratch import drop_scratch, scratch_table


def test_drop_scratch_removes_only_the_stage_s_tables_views_and_frames():
    con = duckdb.connect()
    con.execute(f"create temp table {scratch_table('churn_scores', 'part')} as select 1 as x")
    con.execute(f"create temp view {scratch_table('churn_scores', 'view')} as select 2 as x")
    frame = pa.table({"x": [3]})
    released = weakref.ref(frame)
    con.register(scratch_table("churn_scores", "frame"), frame)
    del frame
    con.execute(f"create temp table {scratch_table('clusters', 'part')} as select 4 as x")
    con.execute("create temp table churn_scores_kept as select 5 as x")  # not `churn_scores__`

    assert drop_scratch(con, "churn_scores") == [
        "churn_scores__frame",
        "churn_scores__part",
        "churn_scores__view",
    ]
    remaining = con.execute(
        "select table_name from duckdb_tables() union all "
        "select view_name from duckdb_views() where not internal order by 1"
    ).fetchall()
    assert remaining == [("churn_scores_kept",), ("clusters__part",)]
    assert drop_scratch(con, "churn_scores") == []
    gc.collect()
    assert released() is None  # the registered frame's memory is free
