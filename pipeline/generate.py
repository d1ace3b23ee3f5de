"""`custseg generate`: write a simulated bank's extracts into the landing folder.

The simulation itself is pure (models/sample_bank.py); this module only streams its chunks to
files, the way a core system would deliver them:

    <landing>/<source>/<source>_YYYYMMDD.csv|parquet   one backfill, then one file per night
    <ground_truth>/customers.parquet                   persona, churn date, payroll flag
    <ground_truth>/acquisitions.parquet                products taken up after a signal
    <ground_truth>/mess_report.json                    bad rows injected per file and kind

Memory stays bounded by `generate.chunk_customers`: each chunk is simulated, made messy and
appended to every file it touches before the next one starts.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import defaultdict, deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from models.sample_bank import BankSpec, add_mess, products_extract, simulate_chunk
from pipeline.config import Config
from pipeline.errors import UsageError

SOURCE_ORDER = ("customers", "products", "balances", "transactions", "events", "questionnaires")


def extract_path(landing: Path, source: str, extract_on: date, file_format: str) -> Path:
    return landing / source / f"{source}_{extract_on:%Y%m%d}.{file_format}"


@dataclass
class GenerateResult:
    spec: BankSpec
    files: list[Path]
    rows_written: dict[str, int]
    seconds: float = 0.0
    mess: dict = field(default_factory=dict)


class _ExtractWriter:
    """Appends frames to one extract file: CSV (with an encoding) or Parquet."""

    def __init__(self, path: Path, file_format: str, encoding: str) -> None:
        self.path, self.file_format, self.encoding = path, file_format, encoding
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, frame: pl.DataFrame) -> None:
        if self.file_format == "parquet":
            table = frame.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self._parquet.write_table(table)
        else:
            buffer = io.StringIO()
            frame.write_csv(buffer, include_header=self.rows == 0)
            with self.path.open("ab") as handle:
                handle.write(buffer.getvalue().encode(self.encoding))
        self.rows += frame.height

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def generate_bank(
    config: Config,
    *,
    force: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Simulate `config.generate.customers` customers and write every extract and the truth."""
    params, paths = config.generate, config.paths
    spec = BankSpec(
        customers=params.customers,
        months=params.months,
        balance_history_months=params.balance_history_months,
        end_on=params.end_on,
        daily_increments=params.daily_increments,
        seed=params.seed,
        mess_rate=params.mess_rate,
    )
    existing = [p for p in (paths.landing, paths.ground_truth) if p.exists() and any(p.iterdir())]
    if existing and not force:
        raise UsageError(
            f"{existing[0]} is not empty; pass --force to replace the sample bank "
            "(its staged data and fitted models are removed too)"
        )
    # models fitted on the bank being replaced mean nothing for the new one
    for folder in (paths.landing, paths.ground_truth, paths.staging, paths.models):
        if folder.exists():
            shutil.rmtree(folder)
    paths.ground_truth.mkdir(parents=True, exist_ok=True)

    writers: dict[tuple[str, date], _ExtractWriter] = {}
    mess_counts: list[pl.DataFrame] = []
    truth_customers: list[pl.DataFrame] = []
    truth_acquisitions: list[pl.DataFrame] = []

    def write(source: str, frame: pl.DataFrame) -> None:
        encoding = "gbk" if source in params.gbk_sources else "utf-8"
        for (extract_on,), part in frame.partition_by("extract_on", as_dict=True).items():
            key = (source, extract_on)
            if key not in writers:
                path = extract_path(paths.landing, source, extract_on, params.file_format)
                writers[key] = _ExtractWriter(path, params.file_format, encoding)
            writers[key].write(part.drop("extract_on"))

    seeds = np.random.SeedSequence(params.seed).spawn(
        2 * ((params.customers - 1) // params.chunk_customers + 1) + 1
    )
    write("products", products_extract(spec))  # the catalog is kept by hand and arrives clean
    jobs = [
        (
            spec,
            first,
            min(params.chunk_customers, params.customers - first),
            int(seeds[2 * number].generate_state(1)[0]),
            int(seeds[2 * number + 1].generate_state(1)[0]),
        )
        for number, first in enumerate(range(0, params.customers, params.chunk_customers))
    ]
    # chunks are simulated side by side and written in order, so the files are the same
    # whatever the number of workers
    pool = _chunk_pool(params.workers, len(jobs))
    with pool or nullcontext():
        results = (
            _in_order(pool, _simulate_messy_chunk, jobs, ahead=params.workers + 1)
            if pool
            else map(_simulate_messy_chunk, jobs)  # lazy: one chunk at a time
        )
        for (_, first, count, _, _), (sources, counts, customers, acquisitions) in zip(
            jobs, results, strict=True
        ):
            for source, messy in sources.items():
                write(source, messy)
            mess_counts.extend(counts)
            truth_customers.append(customers)
            truth_acquisitions.append(acquisitions)
            if on_chunk:
                on_chunk(first + count, params.customers)
    for writer in writers.values():
        writer.close()

    pl.concat(truth_customers).write_parquet(paths.ground_truth / "customers.parquet")
    pl.concat(truth_acquisitions).write_parquet(paths.ground_truth / "acquisitions.parquet")
    mess = _mess_report(mess_counts, writers)
    (paths.ground_truth / "mess_report.json").write_text(json.dumps(mess, indent=2) + "\n")
    rows: dict[str, int] = defaultdict(int)
    for (source, _), writer in writers.items():
        rows[source] += writer.rows
    return GenerateResult(
        spec=spec,
        files=sorted(w.path for w in writers.values()),
        rows_written=dict(rows),
        mess=mess,
    )


def _simulate_messy_chunk(job: tuple) -> tuple:
    """One chunk, simulated and made messy (runs in a worker process): the messy frame per
    source, the mess counts, and the chunk's ground truth."""
    spec, first, count, chunk_seed, mess_seed = job
    chunk = simulate_chunk(spec, first, count, chunk_seed)
    sources, counts = {}, []
    for offset, source in enumerate(SOURCE_ORDER):
        if source == "products":
            continue
        messy, mess = add_mess(source, chunk.sources[source], spec.mess_rate, mess_seed + offset)
        sources[source] = messy
        counts.append(mess.with_columns(source=pl.lit(source)))
    return sources, counts, chunk.truth_customers, chunk.truth_acquisitions


def _in_order(pool, function, jobs: list, ahead: int):
    """function(job) for each job, in order, with at most `ahead` results in flight or waiting
    (memory stays bounded when the workers outpace the writer)."""
    pending: deque = deque()
    upcoming = iter(jobs)
    for job in islice(upcoming, ahead):
        pending.append(pool.submit(function, job))
    while pending:
        result = pending.popleft().result()
        job = next(upcoming, None)
        if job is not None:
            pending.append(pool.submit(function, job))
        yield result


def _chunk_pool(workers: int, chunks: int):
    """A process pool, or None to simulate in this process (one worker, or one chunk)."""
    if workers <= 1 or chunks <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold DuckDB or polars threads
    return ProcessPoolExecutor(
        max_workers=min(workers, chunks), mp_context=multiprocessing.get_context("spawn")
    )


def _mess_report(
    counts: list[pl.DataFrame], writers: dict[tuple[str, date], _ExtractWriter]
) -> dict:
    """{source: {extract_on: {rows_written, duplicate_row, missing_required, ...}}}."""
    report: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for (source, extract_on), writer in sorted(writers.items()):
        report[source][extract_on.isoformat()] = {"rows_written": writer.rows}
    if counts:
        totals = (
            pl.concat(counts)
            .group_by("source", "extract_on", "kind")
            .agg(pl.col("rows").sum())
            .sort("source", "extract_on", "kind")
        )
        for source, extract_on, kind, rows in totals.iter_rows():
            report[source][extract_on.isoformat()][kind] = int(rows)
    return dict(report)
