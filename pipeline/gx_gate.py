"""Run expectation suites with Great Expectations on DuckDB, in a child process.

`validate(tables, suites, work)` is what the runner calls: it writes DuckDB files of views over
the Parquet files to check, runs this module as child processes (`python -m pipeline.gx_gate
spec.json`, the tables shared out between them), and reads the results back. A child imports
GX (seconds; never in the parent), uses an ephemeral context (a file-backed one rewrites YAML
and collides between runs) and a SQL datasource through duckdb-engine, so every metric is
computed in DuckDB, not pandas.

GX has no DuckDB dialect: its SqlAlchemyExecutionEngine returns a query's result after closing
the connection, and duckdb-engine's rows are gone by then ("list index out of range", GX issues
#10738 and #11579). The override below buffers the rows while the connection is open.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb

from pipeline.errors import CustsegError
from pipeline.expectations import Check
from transforms.staging import literal, quote

EXAMPLES = 5


def parquet_view(path: Path) -> str:
    """SQL reading one Parquet file with its own columns (hive detection would take as_of from
    the folder name as_of=... instead of the file)."""
    return f"select * from read_parquet({literal(str(path))}, hive_partitioning = false)"


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def share_of_memory_limit(limit: str, parts: int) -> str:
    """A DuckDB memory_limit ("8GB", "512MiB") divided among `parts` processes, so that
    together they stay within it; a form this does not know is passed on whole."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b)?\s*", limit, re.IGNORECASE)
    if not match or (match.group(2) or "").lower() not in _UNITS:
        return limit
    total = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    return f"{max(int(total / parts) // 2**20, 64)}MiB"


def validate(
    tables: dict[str, Path | str],
    suites: dict[str, list[Check]],
    work: Path,
    workers: int | None = None,
    memory_limit: str | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """One result per check (table, check, severity, success, unexpected_count, examples) and
    GX's Data Docs page per table (HTML, as GX renders it): `start`, then its `result()`."""
    return start(tables, suites, work, workers, memory_limit).result()


class Validation:
    """Child processes checking suites; `result()` waits for them, `cancel()` stops them."""

    def __init__(self, suites: list[str], work: Path, children: list) -> None:
        self.suites, self.work, self.children = suites, work, children

    def result(self) -> tuple[list[dict], dict[str, str]]:
        results: list[dict] = []
        for folder, child in self.children:
            _, stderr = child.communicate()
            output = folder / "results.json"
            if child.returncode != 0 or not output.exists():
                detail = [
                    line
                    for line in stderr.splitlines()
                    if line.strip() and "leaked" not in line and "nanobind" not in line
                ]
                raise CustsegError(
                    "validation could not run: "
                    + (detail[-1] if detail else f"exit {child.returncode}")
                )
            results += json.loads(output.read_text())
        order = {table: number for number, table in enumerate(self.suites)}
        results.sort(key=lambda r: order[r["table"]])  # stable: checks keep their order
        pages = {path.stem: path.read_text() for path in (self.work / "pages").glob("*.html")}
        return results, pages

    def cancel(self) -> None:
        for _, child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()


def start(
    tables: dict[str, Path | str],
    suites: dict[str, list[Check]],
    work: Path,
    workers: int | None = None,
    memory_limit: str | None = None,
) -> Validation:
    """Start checking `suites` in child processes and return at once. A table is a Parquet
    file or SQL; a table without a suite is a view that checks may read (unique_beyond's
    earlier rows).

    The tables are shared out among `workers` child processes (default: one per core, at most
    2), each with its own DuckDB file of views; GX's cost is mostly per table, so two children
    on two cores take about half the time. The children's DuckDB share `memory_limit` (each gets
    its part; without one, DuckDB would take 80% of the machine in each). Results come back in
    the order of `suites`."""
    work.mkdir(parents=True, exist_ok=True)
    count = max(1, min(workers or min(os.cpu_count() or 1, 2), len(suites)))
    groups: list[list[str]] = [[] for _ in range(count)]
    for number, table in enumerate(sorted(suites, key=lambda t: -len(suites[t]))):
        groups[number % count].append(table)
    children = []
    for number, group in enumerate(groups):
        folder = work / f"part{number}"
        folder.mkdir(parents=True, exist_ok=True)
        database = folder / "validate.duckdb"
        database.unlink(missing_ok=True)
        con = duckdb.connect(str(database))
        references = [t for t in tables if t not in suites]  # read by checks, not checked
        try:
            for table in [*group, *references]:
                source = tables[table]
                query = parquet_view(source) if isinstance(source, Path) else source
                con.execute(f"create view {quote(table)} as {query}")
        finally:
            con.close()
        spec = folder / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "database": str(database),
                    "output": str(folder / "results.json"),
                    "pages": str(work / "pages"),
                    "suites": {t: [c.as_dict() for c in suites[t]] for t in group},
                    "memory_limit": memory_limit and share_of_memory_limit(memory_limit, count),
                }
            )
        )
        children.append(
            (
                folder,
                subprocess.Popen(
                    [sys.executable, "-m", "pipeline.gx_gate", str(spec)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
                    cwd=Path(__file__).resolve().parents[1],
                ),
            )
        )
    return Validation(list(suites), work, children)


def repeated_keys_query(columns: list[str], earlier: str | None = None) -> str:
    """The keys that occur more than once in {batch} (GX puts the table in), with how often;
    with `earlier`, also the keys of {batch} already in that table.

    Two passes, each of which spills to disk under the memory limit: the hashes of the key that
    repeat (a GROUP BY on one 8-byte value), then the exact keys among the rows with those
    hashes (hash collisions are dropped there). GX's own uniqueness expectations count with
    `count(*) OVER (PARTITION BY key)`, and that window, like a GROUP BY on the key itself,
    ran out of memory on 100M transaction ids under 953 MiB (5M customers at a 2 GB limit)
    where the hashes took 12.6 s; the hashes of 100M distinct ids had 122 collisions there."""
    key = ", ".join(quote(c) for c in columns)
    query = f"""
        select {key}, count(*) as rows from {{batch}}
        where hash({key}) in (
            select hash({key}) as key_hash from {{batch}} group by key_hash having count(*) > 1
        )
        group by all having count(*) > 1"""
    if earlier:
        query += f"""
        union all
        select {key}, 1 from {quote(earlier)} semi join (select distinct {key} from {{batch}})
            using ({key})"""
    return query


def _gx_expectation(gx, check: dict, index: int):
    kind, columns = check["kind"], check["columns"]
    # GX reports results in its own order: the index in meta ties each back to its check
    options = {"severity": check["severity"], "meta": {"check": index}}
    if kind in ("unique", "unique_beyond"):
        earlier = check["values"][0] if kind == "unique_beyond" else None
        return gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=repeated_keys_query(columns, earlier),
            description=f"{', '.join(columns)} unique",
            **options,
        )
    if kind == "not_null":
        return gx.expectations.ExpectColumnValuesToNotBeNull(column=columns[0], **options)
    if kind == "in_set":
        return gx.expectations.ExpectColumnValuesToBeInSet(
            column=columns[0], value_set=check["values"], **options
        )
    if kind == "between":
        return gx.expectations.ExpectColumnValuesToBeBetween(
            column=columns[0], min_value=check["min_value"], max_value=check["max_value"], **options
        )
    if kind == "share_stable":
        column = quote(columns[0])
        previous = ", ".join(
            f"({literal(str(v))}, {float(share)!r})" for v, share in check["values"]
        )
        query = f"""
            with shares as (
                select coalesce({column}::varchar, '(none)') as value,
                       count(*) / sum(count(*)) over () as share
                from {{batch}} group by all
            ),
            previous(value, share) as (values {previous})
            select value, s.share, p.share as previous_share
            from shares s full join previous p using (value)
            where abs(coalesce(s.share, 0) - coalesce(p.share, 0)) > {float(check["max_value"])!r}
        """
        return gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=query, description=f"{columns[0]} shares", **options
        )
    if kind == "row_count_between":
        return gx.expectations.ExpectTableRowCountToBeBetween(
            min_value=check["min_value"], max_value=check["max_value"], **options
        )
    raise ValueError(f"unknown check kind {kind}")


def _repeated_key_examples(engine, table: str, check: dict) -> list:
    """A few repeated keys of a failed uniqueness check (GX's SUMMARY result of an
    UnexpectedRowsExpectation has only their count): one value, or a list for a compound key."""
    earlier = check["values"][0] if check["kind"] == "unique_beyond" else None
    query = repeated_keys_query(check["columns"], earlier).replace("{batch}", quote(table))
    width = len(check["columns"])
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"select * from ({query}) order by all limit {EXAMPLES}"
        ).fetchall()
    return [row[0] if width == 1 else list(row[:width]) for row in rows]


def _exception_message(info: dict | None) -> str | None:
    """What went wrong when GX could not evaluate a check, or None. GX gives one exception_info
    ({raised_exception, exception_message, ...}) when the expectation itself raised, and one
    per metric ({metric id: exception_info}) when a metric's query failed, e.g. DuckDB out of
    memory; the second must not read as a check that ran and failed."""
    infos = [info or {}]
    if "raised_exception" not in infos[0]:
        infos = [i for i in infos[0].values() if isinstance(i, dict)]
    messages = [  # SQLAlchemy appends the statement and a link: DuckDB's message is enough
        str(i.get("exception_message") or "an error without a message").split("\n[SQL:")[0]
        for i in infos
        if i.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _plain(value):
    """A JSON-friendly example value: numbers as numbers (DECIMAL included), the rest as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):  # a compound key
        return [_plain(v) for v in value]
    if isinstance(value, numbers.Number):
        return float(value)
    return str(value)


def _run(spec_path: str) -> None:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import sqlalchemy_execution_engine as engine_module
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    def execute_query(self, query):
        with self.get_connection() as connection:
            result = self._execute_query_with_recovery(connection, query)
            return result.freeze()()  # buffered while the connection is open

    engine_module.SqlAlchemyExecutionEngine.execute_query = execute_query

    spec = json.loads(Path(spec_path).read_text())
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    engine = {"memory_limit": spec["memory_limit"]} if spec.get("memory_limit") else {}
    source = context.data_sources.add_sql(
        name="run",
        connection_string=f"duckdb:///{spec['database']}",
        kwargs={"connect_args": {"config": engine}},
    )
    pages = Path(spec["pages"])
    pages.mkdir(parents=True, exist_ok=True)
    renderer, view = ValidationResultsPageRenderer(), DefaultJinjaPageView()
    results = []
    for table, checks in spec["suites"].items():
        batch = (
            source.add_table_asset(name=table, table_name=table)
            .add_batch_definition_whole_table("whole")
            .get_batch()
        )
        suite = gx.ExpectationSuite(name=table)
        for index, check in enumerate(checks):
            suite.add_expectation(_gx_expectation(gx, check, index))
        outcome = batch.validate(suite, result_format={"result_format": "SUMMARY"})
        (pages / f"{table}.html").write_text(view.render(renderer.render(outcome)))
        for result in outcome.results:
            check = checks[result.expectation_config.meta["check"]]
            error = _exception_message(result.exception_info)
            details = result.result or {}
            examples = details.get("partial_unexpected_list") or []
            if check["kind"] in ("unique", "unique_beyond") and not result.success and not error:
                examples = _repeated_key_examples(source.get_engine(), table, check)
            results.append(
                {
                    "table": table,
                    "check": check,
                    "expectation": result.expectation_config.type,
                    "severity": check["severity"],
                    "success": bool(result.success) and error is None,
                    "error": error,
                    "unexpected_count": details.get("unexpected_count"),
                    "observed_value": details.get("observed_value"),
                    "examples": [_plain(v) for v in examples[:EXAMPLES]],
                }
            )
    Path(spec["output"]).write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    _run(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: duckdb-engine objects GX keeps alive
