"""The ingest stage: landing extracts -> staged, typed, de-duplicated history (with rejects).

Grain of what it writes:
    <staging>/stg_<source>/extract_on=YYYY-MM-DD/data.parquet     accepted rows of one extract
    <staging>/stg_rejects/source=<source>/extract_on=.../data.parquet  its rejected rows
    <staging>/stg_<source>/extract_on=.../_extract.json            file fingerprint and counts

Every extract dated on or before the as-of date is loaded once; a changed file (size or mtime)
or `--reload` loads it again, replacing its partition, so loading twice never duplicates.
Files are read in date order; within one as-of, customers are staged first so every other
source can be checked against the known customer ids. The split rules are in
transforms/staging.py; this module only finds files, reads them and writes partitions.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb

from pipeline.config import Config, SourceOptions
from pipeline.errors import InputError
from pipeline.warehouse import write_atomically
from transforms.sources import INGEST_ORDER, SOURCES, Source
from transforms.staging import PrivacyRules, ReadOptions, literal, quote, stage_extract

FILE_PATTERN = re.compile(r"^(?P<source>[a-z_]+)_(?P<day>\d{8})\.(?P<ext>csv|parquet|txt)$")
SALT_FILE = ".pseudonymisation_salt"


@dataclass(frozen=True)
class Extract:
    source: str
    extract_on: date
    path: Path

    def fingerprint(self) -> dict:
        stat = self.path.stat()
        return {"file": self.path.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class ExtractResult:
    source: str
    extract_on: str
    file: str
    status: str  # loaded | unchanged
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    rows_duplicate: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    extracts: list[ExtractResult]
    absent_sources: list[str]
    warnings: list[str]

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for e in self.extracts:
            t = out.setdefault(
                e.source,
                {"files": 0, "loaded": 0, "read": 0, "accepted": 0, "rejected": 0, "duplicate": 0},
            )
            t["files"] += 1
            t["loaded"] += e.status == "loaded"
            t["read"] += e.rows_read
            t["accepted"] += e.rows_accepted
            t["rejected"] += e.rows_rejected
            t["duplicate"] += e.rows_duplicate
        return out

    def as_dict(self) -> dict:
        return {
            "extracts": [asdict(e) for e in self.extracts],
            "totals": self.totals(),
            "absent_sources": self.absent_sources,
            "warnings": self.warnings,
        }


def find_extracts(landing: Path, as_of: date) -> dict[str, list[Extract]]:
    """Every landing file named <source>_YYYYMMDD.<ext> dated on or before `as_of`."""
    found: dict[str, list[Extract]] = {name: [] for name in SOURCES}
    for name in SOURCES:
        folder = landing / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = FILE_PATTERN.match(path.name)
            if not match or match["source"] != name:
                continue
            try:
                day = datetime.strptime(match["day"], "%Y%m%d").date()
            except ValueError:
                raise InputError(f"{path}: the date in the file name is not a date") from None
            if day <= as_of:
                found[name].append(Extract(name, day, path))
    return found


def latest_extract_on(landing: Path) -> date | None:
    days = [
        e.extract_on for extracts in find_extracts(landing, date.max).values() for e in extracts
    ]
    return max(days) if days else None


def partition_dir(staging: Path, source: str, extract_on: date) -> Path:
    return staging / f"stg_{source}" / f"extract_on={extract_on.isoformat()}"


def rejects_dir(staging: Path, source: str, extract_on: date) -> Path:
    return staging / "stg_rejects" / f"source={source}" / f"extract_on={extract_on.isoformat()}"


def resolve_salt(config: Config, warn: Callable[[str], None]) -> str:
    """The pseudonymisation salt: from the environment, else one generated for this staging
    area and kept beside it (never in the repo), so hashes stay stable between runs."""
    salt = config.salt()
    if salt:
        return salt
    path = config.paths.staging / SALT_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = os.urandom(16).hex()
    path.write_text(salt + "\n")
    path.chmod(0o600)
    warn(
        f"{config.privacy.salt_env} is not set: generated a salt in {path}; set the variable "
        "in production so pseudonymous keys survive a rebuild of the staging area"
    )
    return salt


def ingest(
    con: duckdb.DuckDBPyConnection,
    config: Config,
    as_of: date,
    *,
    reload: bool = False,
    warn: Callable[[str], None] = lambda message: None,
    on_extract: Callable[[ExtractResult], None] | None = None,
) -> IngestReport:
    landing = config.paths.landing
    if not landing.is_dir():
        raise InputError(
            f"landing folder {landing} does not exist; run `custseg generate` or set paths.landing"
        )
    found = find_extracts(landing, as_of)
    absent = [name for name in INGEST_ORDER if not found[name]]
    if all(not files for files in found.values()):
        raise InputError(f"no extract dated on or before {as_of} in {landing}")
    warnings: list[str] = []
    for name in absent:
        message = f"source {name}: no extract on or before {as_of} in {landing / name}"
        warnings.append(message)
        warn(message)
    salt = resolve_salt(config, warn)
    privacy = PrivacyRules(
        drop_columns=tuple(config.privacy.drop_columns),
        pseudonymise_columns=tuple(config.privacy.pseudonymise_columns),
        salt=salt,
    )
    results: list[ExtractResult] = []
    known_customers: str | None = None
    for name in INGEST_ORDER:  # customers first, so the others can be checked against them
        options = config.ingest.sources[name]
        source = SOURCES[name].with_extra(options.extra_columns)
        if source.customer_key and known_customers is None:
            known_customers = _known_customers(con, config.paths.staging)
        for extract in found[name]:
            result = _ingest_one(
                con,
                config,
                source,
                options,
                extract,
                privacy,
                known_customers=known_customers if source.customer_key else None,
                reload=reload,
            )
            for message in result.warnings:
                warnings.append(message)
                warn(message)
            results.append(result)
            if on_extract:
                on_extract(result)
    return IngestReport(results, absent, warnings)


def _ingest_one(
    con: duckdb.DuckDBPyConnection,
    config: Config,
    source: Source,
    options: SourceOptions,
    extract: Extract,
    privacy: PrivacyRules,
    *,
    known_customers: str | None,
    reload: bool,
) -> ExtractResult:
    staging = config.paths.staging
    target = partition_dir(staging, source.name, extract.extract_on)
    meta_path = target / "_extract.json"
    fingerprint = extract.fingerprint()
    if not reload and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            return ExtractResult(**{**meta["result"], "status": "unchanged", "warnings": []})

    warnings = _read_raw(con, config, source, options, extract)
    others = None
    if source.kind == "history":
        other_files = [
            p
            for p in sorted((staging / source.table).glob("extract_on=*/data.parquet"))
            if p.parent != target
        ]
        if other_files:
            keys = ", ".join(quote(k) for k in source.natural_key)
            con.execute(
                f"create or replace temp view other_extract_keys as select {keys} "
                f"from read_parquet({_file_list(other_files)})"
            )
            others = "other_extract_keys"
    staged = stage_extract(
        con,
        source,
        raw_table="raw_extract",
        extract_on=extract.extract_on,
        file_name=extract.path.name,
        options=ReadOptions(options.date_format, options.timestamp_format),
        privacy=privacy,
        known_customers_table=known_customers,
        other_extract_keys_table=others,
        reject_future_dated=config.ingest.reject_future_dated,
        work_table="classified_extract",
    )
    structural = con.execute("select count(*) from structural_rejects").fetchall()[0][0]
    rejects = staged.rejects
    if structural:
        rejects = rejects.union(con.sql(_structural_rejects_sql(source, extract)))
    result = ExtractResult(
        source=source.name,
        extract_on=extract.extract_on.isoformat(),
        file=extract.path.name,
        status="loaded",
        rows_read=staged.rows_read + structural,
        rows_accepted=staged.rows_accepted,
        rows_rejected=staged.rows_rejected + structural,
        rows_duplicate=staged.rows_duplicate,
        warnings=warnings,
    )
    assert result.rows_read == result.rows_accepted + result.rows_rejected + result.rows_duplicate
    _write_partition(
        staged.accepted,
        target,
        meta={
            "fingerprint": fingerprint,
            "result": {k: v for k, v in asdict(result).items() if k not in ("status", "warnings")},
        },
    )
    _write_partition(
        rejects.order("source_row_number"),
        rejects_dir(staging, source.name, extract.extract_on),
    )
    return result


def _known_customers(con: duckdb.DuckDBPyConnection, staging: Path) -> str | None:
    """Every customer id staged from any customers extract, read once per ingest."""
    files = sorted((staging / "stg_customers").glob("extract_on=*/data.parquet"))
    if not files:
        return None
    con.execute(
        "create or replace temp table known_customers as select distinct customer_id "
        f"from read_parquet({_file_list(files)})"
    )
    return "known_customers"


def _file_list(paths: list[Path]) -> str:
    return "[" + ", ".join(literal(str(p)) for p in paths) + "]"


def _read_raw(
    con: duckdb.DuckDBPyConnection,
    config: Config,
    source: Source,
    options: SourceOptions,
    extract: Extract,
) -> list[str]:
    """Load the file into `raw_extract` (contract columns as VARCHAR + source_row_number) and
    structurally unreadable lines into `structural_rejects`; return warnings."""
    path = extract.path
    file_format = options.file_format
    if file_format == "auto":
        file_format = "parquet" if path.suffix == ".parquet" else "csv"
    try:
        if file_format == "parquet":
            columns = [
                r[0]
                for r in con.sql(
                    f"describe select * from read_parquet({literal(str(path))})"
                ).fetchall()
            ]
        else:
            path = _utf8_copy(path, options.encoding, config.paths.temp)
            columns = _csv_header(path, options)
    except (duckdb.Error, OSError, UnicodeDecodeError) as error:
        raise InputError(f"{extract.path}: cannot read the file: {_first_line(error)}") from None
    missing = [c.name for c in source.columns if c.required and c.name not in columns]
    if missing:
        raise InputError(
            f"{extract.path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'})"
        )
    warnings = []
    expected = {c.name for c in source.columns}
    extra = [c for c in columns if c not in expected]
    if extra:
        warnings.append(
            f"{extract.path.name}: ignored column(s) not in the contract: {', '.join(extra)}"
        )
    select = ", ".join(
        f"cast({quote(c.name)} as varchar) as {quote(c.name)}"
        if c.name in columns
        else f"cast(null as varchar) as {quote(c.name)}"
        for c in source.columns
    )
    con.execute("drop table if exists rejects_table_scan; drop table if exists rejects_table")
    try:
        if file_format == "parquet":
            # a view: the file is read once, by the classification (no copy of it in memory)
            con.execute(f"""
                create or replace temp view raw_extract as
                select file_row_number + 1 as source_row_number, {select}
                from read_parquet({literal(str(path))}, file_row_number = true)
            """)
            con.execute("""create or replace temp table structural_rejects as
                           select 0::bigint as line, ''::varchar as column_name,
                                  ''::varchar as error_type, ''::varchar as csv_line,
                                  ''::varchar as error_message where false""")
        else:
            all_columns = "{" + ", ".join(f"{literal(c)}: 'VARCHAR'" for c in columns) + "}"
            con.execute(f"""
                create or replace temp table raw_rows as
                select row_number() over () as accepted_number, {select}
                from read_csv({literal(str(path))}, header = true,
                              delim = {literal(options.delimiter)},
                              columns = {all_columns}, store_rejects = true,
                              rejects_table = 'rejects_table', rejects_scan = 'rejects_table_scan',
                              auto_detect = false, quote = '"', escape = '"')
            """)
            # one row per unreadable line (a line can break several rules)
            con.execute("""
                create or replace temp table structural_rejects as
                select line - 1 as line, first(column_name order by column_idx) as column_name,
                       string_agg(distinct error_type, ', ') as error_type,
                       first(csv_line) as csv_line, first(error_message) as error_message
                from rejects_table group by line
            """)
            # number accepted rows as data rows of the file: shift past the rejected lines
            con.execute("""
                create or replace temp table raw_numbered as
                with rejected as (
                    select line - row_number() over (order by line) as accepted_before
                    from structural_rejects
                )
                select r.accepted_number + (
                           select count(*) from rejected where accepted_before < r.accepted_number
                       ) as source_row_number, r.* exclude (accepted_number)
                from raw_rows r
            """)
            con.execute("create or replace temp view raw_extract as select * from raw_numbered")
    except duckdb.Error as error:
        raise InputError(f"{extract.path}: cannot read the file: {_first_line(error)}") from None
    finally:
        if path != extract.path:
            path.unlink(missing_ok=True)
    return warnings


def _structural_rejects_sql(source: Source, extract: Extract) -> str:
    has_pii = any(c.pii for c in source.columns)
    record = (
        "json_object('unreadable_line', '<withheld: the line may hold personal data>')"
        if has_pii
        else "json_object('unreadable_line', csv_line)"
    )
    return f"""
        select {literal(source.name)} as source,
               DATE '{extract.extract_on.isoformat()}' as extract_on,
               {literal(extract.path.name)} as file_name, line as source_row_number,
               column_name, 'unreadable line: ' || lower(error_type) || ' (' || error_message || ')'
               as reason, {record} as raw_record
        from structural_rejects
    """


def _csv_header(path: Path, options: SourceOptions) -> list[str]:
    with path.open(encoding="utf-8-sig") as handle:
        header = handle.readline().rstrip("\r\n")
    return [c.strip().strip('"') for c in header.split(options.delimiter)] if header else []


def _utf8_copy(path: Path, encoding: str, temp: Path) -> Path:
    """DuckDB reads UTF-8; other encodings (GBK from Chinese core systems) are transcoded in a
    streaming pass. Bytes that are not valid in the declared encoding stop the run."""
    if codecs.lookup(encoding).name == "utf-8":
        return path
    temp.mkdir(parents=True, exist_ok=True)
    target = temp / f"{path.stem}.utf8.{os.getpid()}.csv"
    with (
        path.open(encoding=encoding, newline="") as source,
        target.open("w", encoding="utf-8", newline="") as sink,
    ):
        shutil.copyfileobj(source, sink, length=1 << 22)
    return target


def _write_partition(relation: duckdb.DuckDBPyRelation, target: Path, meta: dict | None = None):
    """Replace a partition's data file atomically (write aside, then rename)."""
    write_atomically(relation, target / "data.parquet", str(os.getpid()))
    if meta is not None:
        (target / "_extract.json").write_text(json.dumps(meta, indent=2) + "\n")


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def staged_files(staging: Path, as_of: date, known_on: date | None = None) -> dict[str, list[Path]]:
    """source -> its staged partition files a run on `as_of` reads (extracts known by known_on,
    default as_of): a snapshot's latest extract, a history's every extract, oldest first."""
    known_on = known_on or as_of
    found = {}
    for name in INGEST_ORDER:
        source = SOURCES[name]
        files = sorted(
            p
            for p in (staging / source.table).glob("extract_on=*/data.parquet")
            if date.fromisoformat(p.parent.name.removeprefix("extract_on=")) <= known_on
        )
        if files:
            found[name] = files[-1:] if source.kind == "snapshot" else files
    return found


def staged_files_sql(files: list[Path]) -> str:
    """SQL reading staged partition files with the source's columns."""
    return (
        f"select * exclude (extract_on) from read_parquet({_file_list(files)}, "
        "union_by_name = true)"
    )


def staged_view_sql(staging: Path, as_of: date, known_on: date | None = None) -> dict[str, str]:
    """source -> the SQL of its staged view as of `as_of` (see register_staged_views)."""
    views = {}
    for name, files in staged_files(staging, as_of, known_on).items():
        business_date = SOURCES[name].business_date
        where = f" where {quote(business_date)}::date <= DATE '{as_of}'" if business_date else ""
        views[name] = staged_files_sql(files) + where
    return views


def register_staged_views(
    con: duckdb.DuckDBPyConnection, staging: Path, as_of: date, known_on: date | None = None
) -> list[str]:
    """Create a view `stg_<source>` per staged source as it was known on `as_of`; return the
    sources present. Snapshots: the latest extract on or before as_of. History: every extract
    on or before as_of, rows dated on or before it (a row delivered late, after as_of, is not
    seen: re-running a past date gives what was known then). `known_on` (a later date) reads
    the extracts known by then instead, still only rows dated up to as_of: the backtests'
    view of a past date with today's corrected data."""
    views = staged_view_sql(staging, as_of, known_on)
    for name, sql in views.items():
        con.execute(f"create or replace temp view {SOURCES[name].table} as {sql}")
    return list(views)
