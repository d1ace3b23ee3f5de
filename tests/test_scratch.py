"""Scratch tables: a stage's intermediate tables and registered frames go when it is done."""

from __future__ import annotations

import gc
import weakref

import duckdb
import pyarrow as pa
import pytest

from transforms.scratch import align, check_aligned, drop_scratch, materialise, scratch_table


def test_drop_scratch_removes_only_the_stage_s_tables_views_and_frames():
    con = duckdb.connect()
    materialise(con, scratch_table("churn_scores", "table"), "select $x as x", {"x": 0})
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
        "churn_scores__table",
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


def test_align_puts_a_source_in_the_population_s_order_with_nulls_where_it_has_no_row():
    con = duckdb.connect()
    con.execute("set threads = 4")
    con.execute(
        "create table population as select 'c' || lpad(i::varchar, 6, '0') as customer_id "
        "from range(50000) t(i) order by customer_id"
    )
    # the source in another order, every third customer missing, and larger than the
    # population (customers not in it), so the join builds on the population's side
    con.execute(
        "create table source as select customer_id, hash(customer_id) as value from population "
        "where hash(customer_id) % 3 <> 0 "
        "union all select 'x' || i, i from range(60000) t(i) order by value"
    )
    align(con, "population", "aligned", "source")
    check_aligned(con, "stage", "population", ["aligned"])  # does not raise

    got = con.execute("select customer_id, value from aligned").fetchall()
    expected = con.execute(
        "select customer_id, case when hash(customer_id) % 3 <> 0 then hash(customer_id) end "
        "from population"
    ).fetchall()
    assert got == expected


def test_check_aligned_names_the_stage_when_a_part_is_out_of_line():
    con = duckdb.connect()
    con.execute("create table population as select * from (values ('a'), ('b')) t(customer_id)")
    con.execute("create table swapped as select * from (values ('b'), ('a')) t(customer_id)")
    con.execute("create table short as select * from (values ('a')) t(customer_id)")
    for part in ("swapped", "short"):
        with pytest.raises(RuntimeError, match="segments: .* rows out of line"):
            check_aligned(con, "segments", "population", [part])


def test_a_source_already_in_line_is_read_in_place_not_copied():
    con = duckdb.connect()
    con.execute(
        "create table population as select * from (values ('a'), ('b'), ('c')) t(customer_id)"
    )
    con.execute("create table in_line as select customer_id, 1 as x from population")
    con.execute("create table missing_one as select * from in_line where customer_id <> 'b'")
    assert align(con, "population", "first", "in_line") is False
    assert align(con, "population", "second", "missing_one") is True
    views = [
        r[0]
        for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()
    ]
    assert views == ["first"]
    assert con.execute("select x from second").fetchall() == [(1,), (None,), (1,)]
    check_aligned(con, "stage", "population", ["first", "second"])


def test_materialise_replaces_a_scratch_table_or_view_of_that_name():
    con = duckdb.connect()
    con.execute("create temp view stage__part as select 'old view' as x")
    materialise(con, "stage__part", "select $value as x", {"value": "first"})
    materialise(con, "stage__part", "select $value as x", {"value": "second"})
    tables = "select temporary from duckdb_tables() where table_name = 'stage__part'"
    assert con.execute(tables).fetchall() == [(True,)]  # dropped with the connection
    assert con.execute("select x from stage__part").fetchall() == [("second",)]
    views = "select count(*) from duckdb_views() where view_name = 'stage__part'"
    assert con.execute(views).fetchall() == [(0,)]
