"""Expectations: what each published table must satisfy, declared beside the table.

A transform module may define `expectations(params) -> list[Check]` for its table; every table
also gets its key (unique, not null) from the registry. Checks are plain data, so the suite is
cheap to build and to show; `pipeline/gx_gate.py` turns them into Great Expectations
expectations and runs them on DuckDB. Severity: a failed "critical" check stops publishing, a
failed "warning" is reported and the run goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class Check:
    kind: Literal[
        "unique",
        "unique_beyond",
        "not_null",
        "in_set",
        "between",
        "row_count_between",
        "share_stable",
    ]
    columns: tuple[str, ...] = ()
    values: tuple = ()
    min_value: float | None = None
    max_value: float | None = None
    severity: Severity = "critical"
    meta: dict = field(default_factory=dict)

    def describe(self) -> str:
        target = ", ".join(self.columns) or "table"
        if self.kind == "in_set":
            return f"{target} in {list(self.values)}"
        if self.kind in ("between", "row_count_between"):
            return f"{target} between {self.min_value} and {self.max_value}"
        if self.kind == "share_stable":
            return f"{target} shares within {self.max_value} of the previous run"
        if self.kind == "unique_beyond":
            return f"{target} unique, also against the partitions checked before"
        return f"{target} {self.kind.replace('_', ' ')}"

    def as_dict(self) -> dict:
        return asdict(self)


def unique(*columns: str) -> Check:
    return Check("unique", columns)


def not_null(*columns: str) -> list[Check]:
    return [Check("not_null", (c,)) for c in columns]


def in_set(column: str, values, severity: Severity = "critical") -> Check:
    return Check("in_set", (column,), tuple(values), severity=severity)


def between(
    column: str,
    low: float | None = None,
    high: float | None = None,
    severity: Severity = "critical",
) -> Check:
    return Check("between", (column,), min_value=low, max_value=high, severity=severity)


def row_count_between(low: int, high: int, severity: Severity = "critical") -> Check:
    return Check("row_count_between", min_value=low, max_value=high, severity=severity)


def share_stable(column: str, previous: dict[str, float], band: float) -> Check:
    """Each value's share of rows within `band` (absolute) of its share in the previous run: a
    distribution check, a warning by default (segments do move, but not by a landslide)."""
    return Check(
        "share_stable",
        (column,),
        tuple(sorted(previous.items())),
        max_value=band,
        severity="warning",
    )


def unique_beyond(columns: tuple[str, ...], earlier: str) -> Check:
    """The key is unique within the table and appears in no row of the table `earlier` (rows
    checked before): uniqueness over a history checked one partition at a time."""
    return Check("unique_beyond", columns, (earlier,))


def key_checks(key: tuple[str, ...]) -> list[Check]:
    return [unique(*key), *not_null(*key)]


def source_checks(source, privacy_columns: set[str]) -> list[Check]:
    """The suite of a staged input, from its contract (transforms/sources.py): natural key,
    required columns, accepted values and ranges. Ingest rejects rows breaking these, so a
    failure here means the staging area was altered or the contract changed under it."""
    checks = key_checks(source.natural_key)
    for column in source.columns:
        if column.name in privacy_columns:
            continue  # dropped or replaced by a hash at ingest
        if column.required and column.name not in source.natural_key:
            checks += not_null(column.name)
        if column.accepted_values:
            checks.append(in_set(column.name, column.accepted_values))
        if column.min_value is not None or column.max_value is not None:
            checks.append(between(column.name, column.min_value, column.max_value))
    return checks
