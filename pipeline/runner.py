"""The runner: executes the registry's stages for one as-of date and publishes their outputs.

A run writes each stage's output once, as Parquet under a temporary name beside its partition
(`run_<table>` in the run's DuckDB database is a view over that file, which later stages read),
checks its key, and only when every stage succeeded and the outputs passed validation
publishes them all (one atomic rename per partition) and rebuilds the catalog. A failing stage
therefore publishes nothing: yesterday's tables stay as they were, and the run's files are
removed. A run killed outright (kill -9, the out-of-memory killer) cannot remove them; the next
run does (`_remove_abandoned`). Every run, failed or not, writes a manifest.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

import pipeline
from pipeline.artifacts import ArtifactStore, StageContext
from pipeline.config import Config
from pipeline.engine import connect, discard
from pipeline.errors import CustsegError, UsageError, ValidationFailed
from pipeline.expectations import (
    Check,
    in_set,
    key_checks,
    row_count_between,
    share_stable,
    source_checks,
)
from pipeline.gx_gate import Validation, validate
from pipeline.gx_gate import start as start_validation
from pipeline.ingest import ingest, staged_files_sql, staged_view_sql
from pipeline.input_checks import InputCheck, earlier_table, mark_checked
from pipeline.input_checks import plan as plan_input_checks
from pipeline.log import Reporter
from pipeline.registry import PREVIOUS, Stage, upstream
from pipeline.warehouse import (
    MANIFEST_TABLE,
    SHARED_TABLES,
    beside,
    commit,
    partition_path,
    published_dates,
    refresh_catalog,
    write_beside,
)
from transforms.scratch import drop_scratch
from transforms.sources import SOURCES
from transforms.staging import literal, quote


@dataclass
class StageResult:
    stage: str
    status: str  # ok | skipped | failed | interrupted (another stage failed) | not_run
    seconds: float = 0.0
    rows: int | None = None
    output: str | None = None
    warnings: list[str] = field(default_factory=list)
    detail: dict | None = None


@dataclass
class RunManifest:
    run_id: str
    as_of: str
    status: str
    started_at: str
    finished_at: str | None
    seconds: float
    config_file: str | None
    config_hash: str
    code_version: str
    stages: list[StageResult]
    warnings: list[str]
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def code_version() -> str:
    """The package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(pipeline.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{pipeline.__version__}+{commit}" if commit else pipeline.__version__


def new_run_id(as_of: date) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{as_of:%Y%m%d}-{uuid.uuid4().hex[:6]}"


def run_stages(
    config: Config,
    as_of: date,
    stages: list[Stage],
    reporter: Reporter,
    *,
    reload: bool = False,
    known_on: date | None = None,
) -> RunManifest:
    """Run `stages` for `as_of`. `known_on`: read the extracts known by that later date (rows
    still dated up to as_of): how evaluations replay a past date."""
    run_id = new_run_id(as_of)
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results = {s.name: StageResult(s.name, "not_run") for s in stages}
    warnings_before = len(reporter.warnings)
    reporter.info(
        f"run {run_id}: as-of {as_of}, stages {', '.join(s.name for s in stages)}",
        event="run_started",
        run_id=run_id,
        as_of=as_of,
    )
    _remove_abandoned(config, reporter)
    lock = _lock_run(config, run_id)
    database = config.paths.temp / f"run-{run_id}.duckdb"  # the run's tables; removed below
    con = connect(config, database)
    error: CustsegError | Exception | None = None
    written: list[Written] = []  # every output file of the run, in stage order
    gate: InputGate | None = None  # the staged inputs' checks, started after ingest
    try:
        if stages[0].name == "ingest":  # every other stage reads what it stages
            clock = time.perf_counter()
            _run_ingest(con, config, as_of, reporter, results["ingest"], reload)
            results["ingest"].seconds = round(time.perf_counter() - clock, 3)
            _report_stage(reporter, results["ingest"])
        transforms = [s for s in stages if s.name != "ingest"]
        if transforms:  # staging is final once ingest (if selected) has run
            if config.validation.enabled:
                gate = InputGate.start(config, as_of, run_id, known_on)
            staged = staged_view_sql(config.paths.staging, as_of, known_on)
            run = _TransformRun(con, config, as_of, reporter, results, staged, run_id, written)
            run.all(transforms, config.engine.parallel_stages)
        order = {stage.name: number for number, stage in enumerate(stages)}
        written.sort(key=lambda output: order[output.stage.name])  # stage order, not finish order
        _publish(con, config, as_of, run_id, written, results, reporter, gate)
    except Exception as caught:  # noqa: BLE001 - recorded in the manifest, then re-raised
        error = caught
        for result in results.values():
            if result.status == "running":
                result.status = "failed"
    finally:
        if gate is not None:
            gate.stop()  # collected by _publish unless the run failed before
        con.close()
        discard(database)
        for output in written:  # published files were renamed; the rest are discarded
            output.temporary.unlink(missing_ok=True)
        _unlock_run(lock)
    manifest = RunManifest(
        run_id=run_id,
        as_of=as_of.isoformat(),
        status="failed" if error else "succeeded",
        started_at=started_at,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
        config_file=str(config.source_file) if config.source_file else None,
        config_hash=config.hash(),
        code_version=code_version(),
        stages=list(results.values()),
        warnings=reporter.warnings[warnings_before:],
        error=str(error) if error else None,
    )
    write_manifest(config, manifest)
    try:
        refresh_catalog(config.paths.warehouse, config.paths.staging, run_id)
    except (duckdb.Error, OSError) as problem:
        reporter.warn(f"could not rebuild the warehouse catalog: {problem}")
    if error:
        raise error
    reporter.info(
        f"run {run_id} succeeded in {manifest.seconds:.1f} s",
        event="run_finished",
        run_id=run_id,
        status="succeeded",
        seconds=manifest.seconds,
    )
    return manifest


def _lock_run(config: Config, run_id: str) -> TextIO:
    """Hold `paths.temp/run-<run id>.lock` for the run's lifetime: a later run that can take
    the lock knows this run has ended (a killed process releases its locks). The file names
    the run's warehouse, where its unpublished outputs are."""
    config.paths.temp.mkdir(parents=True, exist_ok=True)
    handle = open(config.paths.temp / f"run-{run_id}.lock", "w")  # noqa: SIM115 - held open
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.write(str(config.paths.warehouse.resolve()))
    handle.flush()
    return handle


def _unlock_run(handle: TextIO) -> None:
    Path(handle.name).unlink(missing_ok=True)
    handle.close()


def _remove_abandoned(config: Config, reporter: Reporter) -> None:
    """Remove what killed runs left behind: their database in paths.temp and the outputs they
    wrote beside the warehouse partitions but never published. A run whose lock file is still
    locked is running and is left alone."""
    for lock in sorted(config.paths.temp.glob("run-*.lock")):
        run_id = lock.name.removeprefix("run-").removesuffix(".lock")
        try:
            handle = open(lock)  # noqa: SIM115 - closed below
        except FileNotFoundError:  # the run ended meanwhile
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            # the warehouse it wrote to (another config may share paths.temp)
            warehouse = Path(handle.read().strip() or config.paths.warehouse)
            leftovers = list(warehouse.glob(f"*/as_of=*/*.tmp-{run_id}"))
            for path in leftovers:
                path.unlink(missing_ok=True)
            discard(config.paths.temp / f"run-{run_id}.duckdb")
            lock.unlink(missing_ok=True)
        reporter.warn(
            f"run {run_id} was killed before it finished; removed its database and "
            f"{len(leftovers)} unpublished output file(s)"
        )


@dataclass
class Written:
    """One output of the run: written under a temporary name beside its partition, read by
    later stages through `view`, renamed to `target` when the run publishes."""

    stage: Stage
    table: str
    view: str
    temporary: Path
    target: Path


@dataclass
class InputGate:
    """The staged inputs' checks, started in child processes as soon as ingest is done, so
    that they run beside the stages instead of after them; `_publish` collects them."""

    inputs: list[InputCheck]
    checking: Validation | None

    @classmethod
    def start(cls, config: Config, as_of: date, run_id: str, known_on: date | None):
        inputs = _input_checks(config, as_of, known_on, incremental=True)
        if not inputs:
            return cls(inputs, None)
        tables, suites = _input_suites(inputs)
        work = config.paths.temp / f"validate-{run_id}-inputs"
        return cls(inputs, start_validation(tables, suites, work, None, config.engine.memory_limit))

    def stop(self) -> None:
        """Stop the children if still running and remove their files."""
        if self.checking is not None:
            self.checking.cancel()
            shutil.rmtree(self.checking.work, ignore_errors=True)


def _publish(
    con: duckdb.DuckDBPyConnection,
    config: Config,
    as_of: date,
    run_id: str,
    written: list[Written],
    results: dict[str, StageResult],
    reporter: Reporter,
    gate: InputGate | None,
) -> None:
    """Validate the run's outputs (already written beside their partitions) and the staged
    inputs they were computed from (`gate`: their checks, already started; None when the
    config disables validation), then rename all or none."""
    staged = [(w.stage, w.table, w.temporary, w.target) for w in written]
    if gate is not None and staged:
        features = next((w.view for w in written if w.table == "customer_features"), None)
        customers = _customer_count(con, config, as_of, features)
        _validate(config, as_of, run_id, staged, reporter, customers, gate.inputs, gate.checking)
        mark_checked(gate.inputs)
    for output in written:
        commit(output.temporary, output.target)
        if output.table == output.stage.output:
            results[output.stage.name].output = str(output.target)


def suite_for(
    config: Config,
    stage: Stage,
    table: str,
    as_of: date | None = None,
    customers: int | None = None,
) -> list[Check]:
    """The checks of one output: its key; the run's as-of date (freshness) and, for a table with
    one row per customer, the customer count; and what the stage declares for its main table."""
    key = stage.key if table == stage.output else dict(stage.extra_outputs)[table]
    checks = key_checks(key)
    if as_of is not None and "as_of" in key:
        checks.append(in_set("as_of", [as_of.isoformat()]))
    if customers is not None and key == ("customer_id", "as_of"):
        checks.append(row_count_between(customers, customers))
    if table == stage.output and stage.expectations:
        params = getattr(config, stage.params_block) if stage.params_block else None
        checks += stage.expectations(params)
    return checks


def validate_published(config: Config, as_of: date, reporter: Reporter) -> list[dict]:
    """Run every table's suite on its published partition for `as_of` (custseg validate);
    raise ValidationFailed when a critical expectation fails."""
    from pipeline.registry import STAGES

    staged = []
    for stage in STAGES:
        tables = [stage.output, *(t for t, _ in stage.extra_outputs)] if stage.output else []
        for table in tables:
            part = stage.name if table in SHARED_TABLES else "data"
            path = partition_path(config.paths.warehouse, table, as_of, part)
            if path.exists():
                staged.append((stage, table, path, path))
    if not staged:
        raise UsageError(f"nothing is published for {as_of} in {config.paths.warehouse}")
    run_id = new_run_id(as_of)
    with duckdb.connect() as con:
        customers = _customer_count(con, config, as_of, None)
    inputs = _input_checks(config, as_of, None, incremental=False)
    return _validate(config, as_of, run_id, staged, reporter, customers, inputs)


def _input_checks(config: Config, as_of: date, known_on: date | None, incremental: bool):
    """What the gate checks of the staged inputs (pipeline/input_checks.py)."""
    privacy = set(config.privacy.drop_columns) | set(config.privacy.pseudonymise_columns)
    suites = {}
    for name in SOURCES:
        source = SOURCES[name].with_extra(config.ingest.sources[name].extra_columns)
        suites[name] = (source.table, source_checks(source, privacy))
    return plan_input_checks(config.paths.staging, as_of, suites, known_on, incremental)


def _share_checks(config: Config, table: str, columns: list[str], as_of: date) -> list[Check]:
    """Distribution checks against the latest partition of `table` before as_of (none on a
    first run)."""
    earlier = [d for d in published_dates(config.paths.warehouse, table) if d < as_of]
    if not earlier:
        return []
    path = partition_path(config.paths.warehouse, table, earlier[-1])
    checks = []
    with duckdb.connect() as con:
        for column in columns:
            shares = con.execute(
                f"select coalesce({quote(column)}::varchar, '(none)'), "
                f"count(*) / sum(count(*)) over () from read_parquet({literal(str(path))}) "
                "group by all"
            ).fetchall()
            checks.append(share_stable(column, dict(shares), config.validation.max_share_change))
    return checks


def _customer_count(
    con: duckdb.DuckDBPyConnection, config: Config, as_of: date, computed: str | None
) -> int | None:
    """Customers of the run: its customer_features, else the published partition, else None."""
    if computed is None:
        path = partition_path(config.paths.warehouse, "customer_features", as_of)
        if not path.exists():
            return None
        computed = f"read_parquet({literal(str(path))})"
    return con.execute(f"select count(*) from {computed}").fetchall()[0][0]


def _input_suites(inputs: list[InputCheck]) -> tuple[dict[str, Path | str], dict[str, list]]:
    """The gate's tables and suites for the staged inputs' checks."""
    tables: dict[str, Path | str] = {}
    suites = {}
    for item in inputs:
        tables[item.table] = item.sql
        suites[item.table] = item.checks
        if item.earlier_files:
            tables[earlier_table(item.table)] = staged_files_sql(item.earlier_files)
    return tables, suites


def _validate(
    config,
    as_of,
    run_id,
    staged,
    reporter: Reporter,
    customers,
    inputs: list[InputCheck],
    inputs_checking: Validation | None = None,
) -> list[dict]:
    """Check the outputs, and the `inputs` unless `inputs_checking` checks them already."""
    from pipeline.data_docs import publish_site

    clock = time.perf_counter()
    names = {
        (stage.name, table): table if table not in SHARED_TABLES else f"{table}__{stage.name}"
        for stage, table, _, _ in staged
    }
    suites = {
        names[(s.name, t)]: suite_for(config, s, t, as_of, customers) for s, t, _, _ in staged
    }
    for table, columns in config.validation.stable_shares.items():
        if table in suites:
            suites[table] += _share_checks(config, table, columns, as_of)
    tables: dict[str, Path | str] = {names[(s.name, t)]: tmp for s, t, tmp, _ in staged}
    if inputs_checking is None:
        input_tables, input_suites = _input_suites(inputs)
        tables |= input_tables
        suites |= input_suites
    work = config.paths.temp / f"validate-{run_id}"
    try:
        checked, pages = validate(tables, suites, work, memory_limit=config.engine.memory_limit)
        if inputs_checking is not None:  # started beside the stages; after the outputs
            input_checked, input_pages = inputs_checking.result()
            checked += input_checked
            pages |= input_pages
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if inputs_checking is not None:
            shutil.rmtree(inputs_checking.work, ignore_errors=True)
    folder = config.paths.warehouse / "validations"
    folder.mkdir(parents=True, exist_ok=True)
    document = {"run_id": run_id, "as_of": as_of.isoformat(), "results": checked}
    (folder / f"{run_id}.json").write_text(json.dumps(document, indent=2) + "\n")
    docs = publish_site(config.paths.warehouse / "data_docs", document, pages)
    failed = [r for r in checked if not r["success"]]
    for result in failed:
        if result["severity"] != "critical":
            reporter.warn(f"expectation (warning): {_failure_text(result)}")
    critical = [r for r in failed if r["severity"] == "critical"]
    count = len(suites) + (len(inputs_checking.suites) if inputs_checking is not None else 0)
    reporter.info(
        f"  validated {count} tables ({_inputs_text(inputs)}), {len(checked)} "
        "expectations in "
        f"{time.perf_counter() - clock:.1f} s: {len(critical)} failed; Data Docs: {docs}",
        event="validated",
        expectations=len(checked),
        failed=len(critical),
        seconds=round(time.perf_counter() - clock, 2),
    )
    if critical:
        raise ValidationFailed(
            f"{len(critical)} expectation(s) failed, nothing published: "
            + "; ".join(_failure_text(r) for r in critical[:5])
        )
    return checked


def _inputs_text(inputs: list[InputCheck]) -> str:
    if not inputs:
        return "no new staged partitions"
    new = sum(len(i.new_files) for i in inputs)
    if not new:  # custseg validate: every partition, in full
        return f"{len(inputs)} staged inputs in full"
    earlier = sum(len(i.earlier_files) for i in inputs)
    return (
        f"{len(inputs)} staged inputs: {new} new partitions; "
        f"{earlier} checked by earlier runs, their keys only"
    )


def _failure_text(result: dict) -> str:
    check = Check(
        **{
            **result["check"],
            "columns": tuple(result["check"]["columns"]),
            "values": tuple(result["check"]["values"]),
        }
    )
    if result.get("error"):
        return f"{result['table']}: {check.describe()} could not be checked: {result['error']}"
    found = (
        f"{result['unexpected_count']} rows, e.g. {result['examples']}"
        if result.get("unexpected_count") is not None
        else f"observed {result.get('observed_value')}"
        + (f", e.g. {result['examples']}" if result.get("examples") else "")
    )
    return f"{result['table']}: {check.describe()} failed ({found})"


def _report_stage(reporter: Reporter, result: StageResult) -> None:
    rows = f"{result.rows:>12,} rows" if result.rows is not None else " " * 17
    reporter.info(
        f"  {result.status:<8} {result.stage:<20} {rows}  {result.seconds:7.2f} s",
        event="stage_finished",
        stage=result.stage,
        status=result.status,
        rows=result.rows,
        seconds=result.seconds,
    )


def _run_ingest(
    con: duckdb.DuckDBPyConnection,
    config: Config,
    as_of: date,
    reporter: Reporter,
    result: StageResult,
    reload: bool,
) -> None:
    result.status = "running"

    def on_extract(extract) -> None:
        if extract.status == "loaded":
            reporter.info(
                f"    {extract.file:<32} read {extract.rows_read:>11,}  accepted "
                f"{extract.rows_accepted:>11,}  rejected {extract.rows_rejected:>8,}  "
                f"duplicates {extract.rows_duplicate:>7,}",
                event="extract_loaded",
                **{k: v for k, v in asdict(extract).items() if k != "warnings"},
            )

    report = ingest(con, config, as_of, reload=reload, warn=reporter.warn, on_extract=on_extract)
    result.status = "ok"
    result.rows = sum(e.rows_accepted for e in report.extracts if e.status == "loaded")
    unchanged = sum(e.status == "unchanged" for e in report.extracts)
    if unchanged:
        reporter.info(f"    {unchanged} extract(s) already staged and unchanged (--reload forces)")
    result.warnings = report.warnings
    result.detail = report.as_dict()


class _TransformRun:
    """The run's transform stages, each started as soon as the stages whose tables it reads
    have finished, up to `engine.parallel_stages` at a time.

    Every stage runs on its own cursor of the run's database (its scratch tables and temp
    views are its own; the memory limit is the database's, shared). Much of a stage runs on
    one core (DuckDB's POSITIONAL JOIN and what it feeds, a Parquet write from it, model
    scoring in numpy), so two stages side by side keep both cores busy. Among the ready
    stages, the one heading the longest chain of work still to do starts first, each stage
    weighted by its seconds in the last run that ran it. What a stage computes never depends
    on which other stage runs beside it, so the outputs are the same at any setting."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: Config,
        as_of: date,
        reporter: Reporter,
        results: dict[str, StageResult],
        staged: dict[str, str],
        run_id: str,
        written: list[Written],
    ) -> None:
        self.con, self.config, self.as_of, self.reporter = con, config, as_of, reporter
        self.results, self.staged, self.run_id, self.written = results, staged, run_id, written
        self.skipped: set[str] = set()  # tables whose stage was skipped (no input)
        self.cursors: set[duckdb.DuckDBPyConnection] = set()  # of the stages running
        self.lock = threading.Lock()  # guards `written`, `skipped` and `cursors`

    def all(self, stages: list[Stage], parallel: int) -> None:
        """Run `stages` (in DAG order); the first failure stops new stages from starting,
        interrupts the running ones' queries, and is raised once they have returned."""
        names = {s.name for s in stages}
        waits_for = {s.name: {u for u in upstream(s) if u in names} for s in stages}
        # one at a time, the order changes nothing but which stage a failure stops before:
        # the DAG's order, the same every run
        first = (
            _critical_path_first(stages, waits_for, last_stage_seconds(self.config))
            if parallel > 1
            else stages
        )
        done: set[str] = set()
        running: dict[Future, Stage] = {}
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="stage") as pool:
            try:
                while True:
                    if failure is None:
                        started = set(running.values())
                        ready = [
                            s
                            for s in first
                            if s.name not in done and s not in started and waits_for[s.name] <= done
                        ]
                        for stage in ready[: parallel - len(running)]:
                            running[pool.submit(self.one, stage)] = stage
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        stage = running.pop(future)
                        done.add(stage.name)
                        if future.exception() is None:
                            continue
                        if failure is None:
                            failure = future.exception()
                            self.interrupt()  # the run fails: nothing it computes is kept
                        elif isinstance(future.exception(), duckdb.InterruptException):
                            self.results[stage.name].status = "interrupted"
            except BaseException:  # Ctrl-C, SIGTERM: stop the stages' queries, then leave
                self.interrupt()
                raise
        if failure is not None:
            raise failure

    def interrupt(self) -> None:
        with self.lock:
            for cursor in self.cursors:
                cursor.interrupt()

    def one(self, stage: Stage) -> None:
        result = self.results[stage.name]
        clock = time.perf_counter()
        cursor = self.con.cursor()  # closing it drops the stage's temp tables and views
        with self.lock:
            self.cursors.add(cursor)
        try:
            for name, sql in self.staged.items():
                cursor.execute(f"create or replace temp view {SOURCES[name].table} as {sql}")
            self.compute(cursor, stage, result)
        finally:
            with self.lock:
                self.cursors.discard(cursor)
            cursor.close()
        result.seconds = round(time.perf_counter() - clock, 3)
        _report_stage(self.reporter, result)

    def compute(self, con: duckdb.DuckDBPyConnection, stage: Stage, result: StageResult) -> None:
        """Run one stage on `con` (its cursor); append each output it writes to `written`
        (before writing it, so that a run failing halfway removes a half-written file too)."""
        config, as_of, reporter, run_id = self.config, self.as_of, self.reporter, self.run_id
        lock, written, skipped, present = self.lock, self.written, self.skipped, set(self.staged)
        result.status = "running"
        with lock:
            computed = {w.table: w.view for w in written if w.table not in SHARED_TABLES}
        available: dict[str, str | None] = {}
        for name in stage.inputs:
            if name.startswith("stg_"):
                available[name] = name if name.removeprefix("stg_") in present else None
            elif name.startswith(PREVIOUS):
                available[name] = _previous_input(con, config, name.removeprefix(PREVIOUS), as_of)
            elif name in computed:
                available[name] = computed[name]
            else:
                available[name] = _published_input(con, config, name, as_of)
        missing = [name for name in stage.requires if available[name] is None]
        absent_sources = [m.removeprefix("stg_") for m in missing if m.startswith("stg_")]
        absent_tables = [m for m in missing if not m.startswith("stg_")]
        with lock:
            skipped_before = set(skipped)
        if absent_tables and not set(absent_tables) <= skipped_before:
            raise UsageError(
                f"stage {stage.name} needs {', '.join(absent_tables)} for {as_of}, which is not in "
                f"the warehouse; run `custseg run --as-of {as_of} --from {absent_tables[0]}`"
            )
        if missing:
            why = (
                f"no {', '.join(absent_sources)} extract on or before {as_of}"
                if absent_sources
                else f"{', '.join(absent_tables)} was skipped"
            )
            result.status = "skipped"
            message = f"stage {stage.name} skipped: {why}"
            result.warnings.append(message)
            reporter.warn(message)
            with lock:
                skipped.add(stage.output)
            return
        params = getattr(config, stage.params_block) if stage.params_block else None
        accepted = inspect.signature(stage.transform).parameters
        inputs = {name: table for name, table in available.items() if name in accepted}
        for name in accepted:  # a transform may ask for another block: <block>_params
            block = name.removesuffix("_params")
            if name.endswith("_params") and block in Config.model_fields:
                inputs[name] = getattr(config, block)
        context = None
        if "context" in accepted:
            inputs["context"] = context = StageContext(
                stage=stage.name,
                run_id=run_id,
                artifacts=ArtifactStore(config.paths.models / stage.name),
                warn=lambda message: (result.warnings.append(message), reporter.warn(message)),
                info=reporter.info,
                config_hash=config.hash(),
            )
        produced = stage.transform(con, **inputs, params=params, as_of=as_of)
        relations = produced if isinstance(produced, dict) else {stage.output: produced}
        expected = {stage.output: stage.key, **dict(stage.extra_outputs)}
        if set(relations) != set(expected):
            raise RuntimeError(
                f"stage {stage.name} returned {sorted(relations)}, declared {sorted(expected)}"
            )
        views = {}
        for table, key in expected.items():
            shared = table in SHARED_TABLES
            target = partition_path(
                config.paths.warehouse, table, as_of, stage.name if shared else "data"
            )
            view = views[table] = f"run_{table}__{stage.name}" if shared else f"run_{table}"
            output = Written(stage, table, view, beside(target, run_id), target)
            with lock:
                written.append(output)
            write_beside(relations[table], target, run_id)
            con.execute(
                f"create or replace view {view} as "
                f"select * from read_parquet({literal(str(output.temporary))})"
            )
            _check_key(con, table, key, view)
        drop_scratch(con, stage.name)
        main = views[stage.output]
        result.rows = con.execute(f"select count(*) from {main}").fetchall()[0][0]
        result.status = "ok"
        if context is not None and context.detail:
            result.detail = context.detail
        for message in stage.warnings(con, main) if stage.warnings else []:
            result.warnings.append(message)
            reporter.warn(message)
        for name in stage.uses:
            if name.startswith(PREVIOUS) and available[name] is None:
                reporter.info(
                    f"    {stage.name}: no {name.removeprefix(PREVIOUS)} before {as_of} in the "
                    "warehouse (first run): nothing to compare with"
                )


def _critical_path_first(
    stages: list[Stage], waits_for: dict[str, set[str]], seconds: dict[str, float]
) -> list[Stage]:
    """`stages` ordered by the work on their longest chain of dependants, largest first (ties
    in DAG order); a stage no run has timed yet counts one second."""
    chain: dict[str, float] = {}
    for stage in reversed(stages):  # dependants come later in DAG order
        after = [chain[s.name] for s in stages if stage.name in waits_for[s.name]]
        chain[stage.name] = seconds.get(stage.name, 1.0) + max(after, default=0.0)
    order = {s.name: number for number, s in enumerate(stages)}
    return sorted(stages, key=lambda s: (-chain[s.name], order[s.name]))


def last_stage_seconds(config: Config, runs: int = 20) -> dict[str, float]:
    """Each stage's seconds in the newest of the last `runs` manifests that ran it."""
    seconds: dict[str, float] = {}
    folder = config.paths.warehouse / MANIFEST_TABLE
    for path in sorted(folder.glob("*.json"), reverse=True)[:runs]:  # run ids sort by time
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for stage in manifest.get("stages", []):
            if stage.get("status") == "ok":
                seconds.setdefault(stage["stage"], float(stage["seconds"]))
    return seconds


def _published_input(
    con: duckdb.DuckDBPyConnection, config: Config, table: str, as_of: date
) -> str | None:
    """An upstream table from an earlier run of the same as-of (for --only / --from)."""
    path = partition_path(config.paths.warehouse, table, as_of)
    if not path.exists():
        return None
    view = f"published_{table}"
    con.execute(
        f"create or replace temp view {view} as select * from read_parquet({literal(str(path))})"
    )
    return view


def _previous_input(
    con: duckdb.DuckDBPyConnection, config: Config, table: str, as_of: date
) -> str | None:
    """The latest published partition of `table` dated before `as_of` (for hysteresis and
    migrations); None on a first run."""
    earlier = [d for d in published_dates(config.paths.warehouse, table) if d < as_of]
    if not earlier:
        return None
    path = partition_path(config.paths.warehouse, table, earlier[-1])
    view = f"{PREVIOUS}{table}"
    con.execute(
        f"create or replace temp view {view} as select * from read_parquet({literal(str(path))})"
    )
    return view


def _check_key(
    con: duckdb.DuckDBPyConnection, output: str, key: tuple[str, ...], table: str
) -> None:
    """The grain is a contract: a null or repeated key stops the run before publishing."""
    columns = ", ".join(quote(k) for k in key)
    nulls = " or ".join(f"{quote(k)} is null" for k in key)
    bad = con.execute(
        f"select {columns}, count(*) as n from {table} group by all having n > 1 or {nulls} limit 3"
    ).fetchall()
    if bad:
        raise ValidationFailed(
            f"{output}: key ({', '.join(key)}) is not unique and not null; e.g. {bad}"
        )


def write_manifest(config: Config, manifest: RunManifest) -> Path:
    """The manifest as JSON (for people and tools) and as rows of the run_manifests table."""
    folder = config.paths.warehouse / MANIFEST_TABLE
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{manifest.run_id}.json"
    json_path.write_text(json.dumps(manifest.as_dict(), indent=2, default=str) + "\n")
    rows = [
        {
            "run_id": manifest.run_id,
            "as_of": date.fromisoformat(manifest.as_of),
            "run_status": manifest.status,
            "started_at": manifest.started_at,
            "finished_at": manifest.finished_at,
            "config_hash": manifest.config_hash,
            "code_version": manifest.code_version,
            "stage": s.stage,
            "stage_status": s.status,
            "seconds": s.seconds,
            "rows": s.rows,
            "warnings": s.warnings,
            "error": manifest.error,
        }
        for s in manifest.stages
    ]
    table = pa.Table.from_pylist(rows)
    target = folder / f"{manifest.run_id}.parquet"
    temporary = folder / f".{manifest.run_id}.parquet.tmp"
    pq.write_table(table, temporary)
    os.replace(temporary, target)
    return json_path


def resolve_as_of(config: Config, value: str) -> date:
    """`latest` = the newest extract date in the landing folder; else an ISO date."""
    if value == "latest":
        from pipeline.ingest import latest_extract_on

        day = latest_extract_on(config.paths.landing)
        if day is None:
            raise UsageError(
                f"--as-of latest: no extract in {config.paths.landing}; "
                "run `custseg generate` or give a date"
            )
        return day
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--as-of {value!r}: expected YYYY-MM-DD or 'latest'") from None
