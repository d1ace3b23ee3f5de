"""Rule-based dimensions: ordered rules from config compiled to one SQL CASE.

The one mechanism behind lifecycle_stages, life_stages and relationship_depth: the first rule
whose `when` holds names the class; the last rule catches everyone else. A condition on a null
feature is false (except `is_null: true`), so a customer with missing data falls through to a
later rule instead of raising.

`classify` returns, per customer: the class code and Chinese name, the rule that matched as
readable text (what a relationship manager or an auditor sees), and the features the rules read.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import ClassRule, Condition, DemandSignal, RuleDimensionParams
from pipeline.errors import ConfigError
from pipeline.expectations import Check, in_set, not_null
from transforms.staging import literal, quote

_OPERATORS = (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "="))


def _sql_value(value: float | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return literal(value)
    return repr(float(value))


def _text_value(value: float | str | bool) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def condition_sql(column: str, condition: Condition) -> tuple[str, str]:
    """(SQL that is true or false, never null; readable text) for one feature's condition."""
    parts, text = [], []
    if condition.is_null is not None:
        parts.append(f"{quote(column)} is {'' if condition.is_null else 'not '}null")
        text.append(f"{column} is {'' if condition.is_null else 'not '}null")
    for name, operator in _OPERATORS:
        value = getattr(condition, name)
        if value is not None:
            parts.append(f"coalesce({quote(column)} {operator} {_sql_value(value)}, false)")
            text.append(f"{column} {operator} {_text_value(value)}")
    if condition.in_ is not None:
        values = ", ".join(literal(v) for v in condition.in_)
        parts.append(f"coalesce({quote(column)} in ({values}), false)")
        text.append(f"{column} in ({', '.join(condition.in_)})")
    return " and ".join(parts), " and ".join(text)


def rule_sql(rule: ClassRule | DemandSignal) -> tuple[str, str]:
    """(SQL condition, readable text) of a whole rule (or demand signal: anything with
    `alternatives`); an empty one is always true."""
    alternatives = [a for a in rule.alternatives if a]
    if not alternatives:
        return "true", "otherwise"
    sql, text = [], []
    for conditions in alternatives:
        compiled = [condition_sql(column, c) for column, c in conditions.items()]
        sql.append("(" + " and ".join(s for s, _ in compiled) + ")")
        text.append(" and ".join(t for _, t in compiled))
    return " or ".join(sql), " or ".join(text)


def referenced_columns(rules: list[ClassRule]) -> list[str]:
    """Every feature the rules read, in the order they first appear."""
    seen: list[str] = []
    for rule in rules:
        for conditions in rule.alternatives:
            seen.extend(c for c in conditions if c not in seen)
    return seen


def classify(
    con: duckdb.DuckDBPyConnection,
    features: str,
    rules: list[ClassRule],
    *,
    dimension: str,
    config_block: str,
    as_of: date,
    keep: tuple[str, ...] = (),
) -> duckdb.DuckDBPyRelation:
    """One row per customer of `features`: `<dimension>`, `<dimension>_name_zh`,
    `<dimension>_rule`, the `keep` columns and every feature the rules read."""
    available = set(con.table(features).columns)
    used = referenced_columns(rules)
    unknown = [c for c in used if c not in available]
    if unknown:
        raise ConfigError(
            f"{config_block}.rules: unknown feature(s) {', '.join(unknown)}; "
            "rules may read any customer_features column (see `custseg stages` and the README)"
        )
    compiled = [rule_sql(r) for r in rules]
    case = "\n".join(f"when {sql} then {i}" for i, (sql, _) in enumerate(compiled))
    shown = [c for c in (*keep, *used) if c not in ("customer_id", "as_of")]
    shown = list(dict.fromkeys(shown))
    return con.sql(
        f"""
        with matched as (
            select *, case {case} end as rule_index from {features}
        )
        select customer_id, $as_of::date as as_of,
               $codes[rule_index + 1] as {quote(dimension)},
               $names[rule_index + 1] as {quote(dimension + "_name_zh")},
               $texts[rule_index + 1] as {quote(dimension + "_rule")}
               {"".join(f", {quote(c)}" for c in shown)}
        from matched
        order by customer_id
        """,
        params={
            "as_of": as_of,
            "codes": [r.code for r in rules],
            "names": [r.name_zh for r in rules],
            "texts": [text for _, text in compiled],
        },
    )


def rule_expectations(dimension: str):
    """The expectations of a rule-based dimension: its value is one of the rule codes."""

    def expectations(params: RuleDimensionParams) -> list[Check]:
        return [*not_null(dimension), in_set(dimension, [r.code for r in params.rules])]

    return expectations
