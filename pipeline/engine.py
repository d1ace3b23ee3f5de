"""One DuckDB connection per run, set up from the `engine` block of the config."""

from __future__ import annotations

import duckdb

from pipeline.config import Config


def connect(config: Config) -> duckdb.DuckDBPyConnection:
    """An in-memory database for the run's work; beyond `memory_limit` DuckDB spills to
    `paths.temp`, so memory stays bounded as the data grows."""
    config.paths.temp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": config.engine.memory_limit})
    con.execute(f"set temp_directory = '{config.paths.temp.resolve()}'")
    if config.engine.threads:
        con.execute(f"set threads = {int(config.engine.threads)}")
    # outputs are written in a stated order, so files are identical from run to run
    con.execute("set preserve_insertion_order = true")
    return con
