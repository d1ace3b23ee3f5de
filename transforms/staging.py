"""stg_<source>: one extract's raw rows split into accepted, rejected and duplicate rows.

Grain of the accepted output: one row per natural key of the source (see transforms/sources.py),
typed as the contract says, PII dropped or replaced by a salted hash, plus `extract_on`.
Grain of the rejects: one row per rejected source row, with the first failing column, every
reason, and the raw values (PII masked).

Invariant, checked by the ingest stage and the tests: rows read = accepted + rejected + duplicates.
Checks, in the order their reasons are listed:
    missing required value; malformed date/timestamp/number; value not accepted;
    out of range; unknown customer_id (when a customers snapshot exists);
    dated after the extract date (history sources, when configured).
Duplicates: valid rows whose natural key repeats an earlier row of the same extract, or (history
sources) a key already staged by another extract. The first occurrence is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb

from transforms.sources import Column, Source

REJECT_COLUMNS = (
    "source",
    "extract_on",
    "file_name",
    "source_row_number",
    "column_name",
    "reason",
    "raw_record",
)


@dataclass(frozen=True)
class ReadOptions:
    date_format: str
    timestamp_format: str


@dataclass(frozen=True)
class PrivacyRules:
    drop_columns: tuple[str, ...]
    pseudonymise_columns: tuple[str, ...]
    salt: str


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def exact_avg(expression: str) -> str:
    """avg() of a floating-point expression, summed as an exact decimal: a parallel avg of
    doubles adds in whatever order DuckDB's threads finish, which changes the last bits from
    run to run (found by the 2 GiB bench re-run)."""
    return f"avg(({expression})::decimal(38, 12))::double"


def _typed(column: Column, options: ReadOptions) -> str:
    raw = f"nullif(trim({quote(column.name)}), '')"
    if column.type == "varchar":
        return raw
    if column.type == "date":
        return (
            f"coalesce(try_strptime({raw}, {literal(options.date_format)})::date, "
            f"try_cast({raw} as date))"
        )
    if column.type == "timestamp":
        return (
            f"coalesce(try_strptime({raw}, {literal(options.timestamp_format)}), "
            f"try_cast({raw} as timestamp))"
        )
    sql_type = {"integer": "bigint", "decimal": "decimal(18,2)", "boolean": "boolean"}[column.type]
    return f"try_cast({raw} as {sql_type})"


def _failures(
    source: Source,
    check_customers: bool,
    reject_after: date | None,
) -> list[tuple[str, str, str]]:
    """(column, SQL condition on the `typed` CTE, reason SQL expression) for every check."""
    checks: list[tuple[str, str, str]] = []
    for column in source.columns:
        raw, typed = f"r_{column.name}", f"t_{column.name}"
        blank = f"nullif(trim({raw}), '') is null"
        if column.required:
            checks.append((column.name, blank, "'missing required value'"))
        if column.type != "varchar":
            checks.append(
                (
                    column.name,
                    f"not ({blank}) and {typed} is null",
                    f"'malformed {column.type}: ' || {raw}",
                )
            )
        if column.accepted_values:
            # list_contains, not IN: DuckDB plans a long IN list as a join against the values
            values = ", ".join(literal(v) for v in column.accepted_values)
            checks.append(
                (
                    column.name,
                    f"{typed} is not null and not list_contains([{values}], {typed})",
                    f"'value not accepted: ' || {typed}",
                )
            )
        if column.min_value is not None:
            checks.append(
                (column.name, f"{typed} < {column.min_value}", f"'below {column.min_value:g}'")
            )
        if column.max_value is not None:
            checks.append(
                (column.name, f"{typed} > {column.max_value}", f"'above {column.max_value:g}'")
            )
    if check_customers and source.customer_key:
        checks.append(
            (
                "customer_id",
                "t_customer_id is not null and not is_known_customer",
                "'unknown customer_id: ' || t_customer_id",
            )
        )
    if reject_after is not None and source.business_date:
        checks.append(
            (
                source.business_date,
                f"t_{source.business_date}::date > DATE '{reject_after.isoformat()}'",
                "'dated after the extract date'",
            )
        )
    return checks


def _output_columns(source: Source, privacy: PrivacyRules) -> list[str]:
    out = []
    for column in source.columns:
        if column.name in privacy.drop_columns:
            continue
        if column.name in privacy.pseudonymise_columns:
            out.append(f"sha256({literal(privacy.salt)} || t_{column.name}) as {column.name}_hash")
        else:
            out.append(f"t_{column.name} as {quote(column.name)}")
    return out


def _masked_raw_record(source: Source, privacy: PrivacyRules) -> str:
    parts = []
    for column in source.columns:
        value = f"r_{column.name}"
        if column.name in privacy.drop_columns:
            value = f"case when {value} is null then null else '<dropped>' end"
        elif column.name in privacy.pseudonymise_columns:
            value = f"'sha256:' || sha256({literal(privacy.salt)} || {value})"
        parts.append(f"{literal(column.name)}, {value}")
    return f"json_object({', '.join(parts)})"


@dataclass(frozen=True)
class StagedExtract:
    accepted: duckdb.DuckDBPyRelation
    rejects: duckdb.DuckDBPyRelation
    rows_read: int
    rows_rejected: int
    rows_duplicate: int

    @property
    def rows_accepted(self) -> int:
        return self.rows_read - self.rows_rejected - self.rows_duplicate


def stage_extract(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    *,
    raw_table: str,
    extract_on: date,
    file_name: str,
    options: ReadOptions,
    privacy: PrivacyRules,
    known_customers_table: str | None,
    other_extract_keys_table: str | None,
    reject_future_dated: bool,
    work_table: str,
) -> StagedExtract:
    """Split `raw_table` (every contract column as VARCHAR, plus `source_row_number`).

    `known_customers_table` has a `customer_id` column (or is None: no check);
    `other_extract_keys_table` holds the natural keys staged by other extracts (history sources).
    The classified rows are materialised once in `work_table` (DuckDB spills it if large).
    """
    checks = _failures(
        source,
        check_customers=known_customers_table is not None,
        reject_after=extract_on if reject_future_dated else None,
    )
    raw_cols = ", ".join(f"{quote(c.name)} as r_{c.name}" for c in source.columns)
    typed_cols = ", ".join(f"{_typed(c, options)} as t_{c.name}" for c in source.columns)
    # each check's condition is evaluated once, as a flag column; the first failed one names
    # the reject column, every failed one adds its reason
    flags = ", ".join(
        f"coalesce({cond}, false) as failed_{n}" for n, (_, cond, _) in enumerate(checks)
    )
    first_failed = " ".join(
        f"when failed_{n} then {literal(col)}" for n, (col, _, _) in enumerate(checks)
    )
    reasons = ", ".join(
        f"case when failed_{n} then {literal(col + ': ')} || {reason} end"
        for n, (col, _, reason) in enumerate(checks)
    )
    key = ", ".join(f"t_{k}" for k in source.natural_key)
    known = (
        f"left join (select distinct customer_id, true as is_known from {known_customers_table})"
        " known on known.customer_id = t.t_customer_id"
        if known_customers_table
        else ""
    )
    is_known = "coalesce(known.is_known, false)" if known_customers_table else "true"
    typed_names = ", ".join(f"t_{c.name}" for c in source.columns)
    # one pass: type every column, find each row's first failed check and every reason; only
    # what the outputs need is kept (typed values; the masked raw record of rejected rows)
    con.execute(f"""
        create or replace temp table {work_table} as
        with typed as (
            select source_row_number, {raw_cols}, {typed_cols}
            from {raw_table}
        ), joined as (
            select t.*, {is_known} as is_known_customer from typed t {known}
        ), flagged as (
            select *, {flags} from joined
        ), classified as (
            select *, case {first_failed} end as reject_column from flagged
        )
        select source_row_number, {typed_names}, reject_column,
               case when reject_column is not null then concat_ws('; ', {reasons}) end
                   as reject_reason,
               case when reject_column is not null then {_masked_raw_record(source, privacy)}
               end as raw_record
        from classified
    """)
    # duplicates among the valid rows: a key staged by another extract, or not the first row
    # of its key in this file (a window over the key and row number alone, not the wide rows)
    staged_rows = (
        f"""union
            select source_row_number from {work_table} w
            semi join (select {", ".join(source.natural_key)} from {other_extract_keys_table})
                staged on {" and ".join(f"staged.{k} = w.t_{k}" for k in source.natural_key)}
            where reject_column is null"""
        if other_extract_keys_table
        else ""
    )
    con.execute(f"""
        create or replace temp table {work_table}_duplicates as
        select source_row_number from (
            select source_row_number,
                   row_number() over (partition by {key} order by source_row_number) as copy
            from {work_table} where reject_column is null
        ) where copy > 1
        {staged_rows}
    """)
    counts = con.execute(f"""
        select count(*), count(*) filter (where reject_column is not null),
               (select count(*) from {work_table}_duplicates)
        from {work_table}
    """).fetchall()[0]
    accepted = con.sql(f"""
        select {", ".join(_output_columns(source, privacy))},
               DATE '{extract_on.isoformat()}' as extract_on
        from {work_table}
        anti join {work_table}_duplicates using (source_row_number)
        where reject_column is null
        order by source_row_number
    """)
    rejects = con.sql(f"""
        select {literal(source.name)} as source,
               DATE '{extract_on.isoformat()}' as extract_on,
               {literal(file_name)} as file_name,
               source_row_number,
               reject_column as column_name,
               reject_reason as reason,
               raw_record
        from {work_table}
        where reject_column is not null
        order by source_row_number
    """)
    return StagedExtract(
        accepted=accepted,
        rejects=rejects,
        rows_read=counts[0],
        rows_rejected=counts[1],
        rows_duplicate=counts[2],
    )
