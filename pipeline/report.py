"""The run report: one self-contained HTML file per as-of date for people who do not write SQL.

`write_report(config, as_of)` reads what the warehouse holds for the date (published tables,
the run manifest, validation results, the churn model's metadata, saved evaluations and
backtests) and writes <warehouse>/reports/report_<as_of>.html. Styles are inline and charts are
inline SVG (pipeline.charts): the file loads nothing, so it can be mailed or archived as is.

Sections (each a <section id=...>, which the tests look for):
    run-summary           the run: status, time, config hash, code version, stages
    input-reconciliation  per source read = accepted + rejected + duplicates; top reject reasons
    validation            expectations run and failed, and where the Data Docs are
    segment-sizes         customers and AUM per value of each segment dimension
    migrations            from/to matrices per dimension against the previous as-of
    cluster-profiles      each cluster's size, label and centroid
    churn-model           out-of-time metrics beside the baseline, lift chart, calibration plot
    nbp-evaluation        the latest next-best-product evaluation on or before the date
    feature-coverage      share of customers each feature group covers
    backtest              per-date churn, NBP and cluster figures of the latest backtest
A section with nothing to show says why and which command fills it.
"""

from __future__ import annotations

import json
import numbers
import os
from datetime import date
from html import escape
from pathlib import Path

import duckdb

from pipeline.backtest import latest_backtest
from pipeline.charts import grouped_bar_chart, hbar_chart, line_chart
from pipeline.config import Config
from pipeline.data_docs import validation_summary
from pipeline.errors import UsageError
from pipeline.ingest import rejects_dir
from pipeline.warehouse import partition_path
from transforms.staging import literal

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;
padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;
margin-top:2.2rem}h3{font-size:1rem;margin-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f6f8;text-align:left}td.l,th.l{text-align:left}
.note{color:#57606a;font-size:.9rem}.bad{color:#b00020;font-weight:bold}.ok{color:#2f7d32}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}nav a{margin-right:.8rem;font-size:.9rem}
"""


def report_path(config: Config, as_of: date) -> Path:
    return config.paths.warehouse / "reports" / f"report_{as_of.isoformat()}.html"


def write_report(config: Config, as_of: date, run_id: str | None = None) -> Path:
    """Write the report for `as_of` (the run `run_id`, else the latest run of that date)."""
    manifest = _manifest(config, as_of, run_id)
    if manifest is None and not partition_path(config.paths.warehouse, "segments", as_of).exists():
        raise UsageError(
            f"nothing was run for {as_of} in {config.paths.warehouse}: "
            f"run `custseg run --as-of {as_of}` first"
        )
    with duckdb.connect() as con:
        reader = _Reader(con, config, as_of)
        sections = [
            ("run-summary", "Run summary", _run_summary(manifest)),
            ("input-reconciliation", "Input reconciliation", _inputs(reader, manifest)),
            ("validation", "Validation", _validation(config, manifest)),
            ("segment-sizes", "Segment sizes and AUM", _segment_sizes(reader)),
            ("migrations", "Migrations against the previous run", _migrations(reader)),
            ("cluster-profiles", "Cluster profiles", _clusters(reader)),
            ("churn-model", "Churn model", _churn(reader, config)),
            ("nbp-evaluation", "Next-best-product evaluation", _nbp(config, as_of)),
            ("feature-coverage", "Feature coverage", _coverage(reader)),
            ("backtest", "Backtest", _backtest(config, as_of)),
        ]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>'
        for key, title, content in sections
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>custseg report {as_of}</title><style>{STYLE}</style></head><body>"
        f"<h1>custseg run report, as of {as_of}</h1><nav>{nav}</nav>{body}</body></html>\n"
    )
    target = report_path(config, as_of)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temporary.write_text(page)
    os.replace(temporary, target)
    return target


class _Reader:
    """Published partitions of one as-of date, as DuckDB relations (None if absent)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, config: Config, as_of: date):
        self.con, self.config, self.as_of = con, config, as_of

    def rows(self, table: str, query: str, part: str = "data") -> list[tuple] | None:
        path = partition_path(self.config.paths.warehouse, table, self.as_of, part)
        if not path.exists():
            return None
        relation = f"read_parquet({literal(str(path))}, hive_partitioning = false)"
        return self.con.execute(query.replace("{t}", relation)).fetchall()


def _manifest(config: Config, as_of: date, run_id: str | None) -> dict | None:
    folder = config.paths.warehouse / "run_manifests"
    if run_id is not None:
        path = folder / f"{run_id}.json"
        return json.loads(path.read_text()) if path.exists() else None
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    mine = [m for m in found if m["as_of"] == as_of.isoformat()]
    return mine[-1] if mine else None


def _table(header: list[str], rows: list[list]) -> str:
    """An HTML table: numbers right-aligned, text left-aligned."""

    def cell(value) -> str:
        number = isinstance(value, numbers.Number) and not isinstance(value, bool)
        align = "" if number or value is None else ' class="l"'
        return f"<td{align}>{escape(_show(value))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _show(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, numbers.Number):
        value = float(value)
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _run_summary(manifest: dict | None) -> str:
    if manifest is None:
        return _note("No run manifest for this date (the tables were published by hand?).")
    status = manifest["status"]
    facts = [
        ["run", manifest["run_id"]],
        ["status", status],
        ["as of", manifest["as_of"]],
        ["started", manifest["started_at"]],
        ["seconds", manifest["seconds"]],
        ["config", f"{manifest['config_file']} (hash {manifest['config_hash']})"],
        ["code version", manifest["code_version"]],
    ]
    if manifest.get("error"):
        facts.append(["error", manifest["error"]])
    stages = [
        [s["stage"], s["status"], s["rows"], s["seconds"], "; ".join(s["warnings"]) or ""]
        for s in manifest["stages"]
    ]
    css = "ok" if status == "succeeded" else "bad"
    return (
        f'<p class="{css}">Run {escape(status)} in {manifest["seconds"]:.1f} s.</p>'
        + _table(["", ""], facts)
        + _table(["stage", "status", "rows", "seconds", "warnings"], stages)
    )


def _inputs(reader: _Reader, manifest: dict | None) -> str:
    ingest = next((s for s in (manifest or {}).get("stages", []) if s["stage"] == "ingest"), None)
    if not ingest or not ingest.get("detail"):
        return _note("This run did not ingest (e.g. `--from customer_features`).")
    totals = ingest["detail"]["totals"]
    rows = [
        [
            source,
            t["read"],
            t["accepted"],
            t["rejected"],
            t["duplicate"],
            "yes" if t["read"] == t["accepted"] + t["rejected"] + t["duplicate"] else "NO",
        ]
        for source, t in totals.items()
    ]
    html = _table(["source", "read", "accepted", "rejected", "duplicates", "reconciles"], rows)
    files = [
        str(
            rejects_dir(
                reader.config.paths.staging, e["source"], date.fromisoformat(e["extract_on"])
            )
            / "data.parquet"
        )
        for e in ingest["detail"]["extracts"]
    ]
    files = [f for f in files if Path(f).exists()]
    if files:
        reasons = reader.con.execute(
            # a reason reads "<column>: <what is wrong>[: <the value>]"
            "select source, column_name, split_part(reason, ': ', 2) as problem, count(*) as n, "
            "array_to_string(list(distinct nullif(split_part(reason, ': ', 3), ''))[:3], ' | ') "
            "from read_parquet($files, union_by_name = true) "
            "group by all order by n desc, source, column_name, problem limit 12",
            {"files": files},
        ).fetchall()
        html += "<h3>Most frequent reject reasons (extracts of this run)</h3>" + _table(
            ["source", "column", "problem", "rows", "e.g. values"], [list(r) for r in reasons]
        )
    return html


def _validation(config: Config, manifest: dict | None) -> str:
    if manifest is None:
        return _note("No run for this date.")
    path = config.paths.warehouse / "validations" / f"{manifest['run_id']}.json"
    if not path.exists():
        return _note("This run was not validated (validation.enabled is off, or it failed first).")
    results = json.loads(path.read_text())["results"]
    failed = [r for r in results if not r["success"]]
    summary = validation_summary(results)
    docs = config.paths.warehouse / "data_docs" / "runs" / manifest["run_id"] / "index.html"
    html = (
        f"<p>{summary['expectations']} expectations on {summary['tables']} tables; "
        f"{len(failed)} failed ({summary['critical']} critical). Data Docs: "
        f"<code>{escape(str(docs))}</code></p>"
    )
    if failed:
        html += _table(
            ["table", "severity", "expectation", "columns", "unexpected", "examples"],
            [
                [
                    r["table"],
                    r["severity"],
                    r["expectation"],
                    ", ".join(r["check"]["columns"]),
                    r.get("unexpected_count") or r.get("observed_value"),
                    str(r["examples"]),
                ]
                for r in failed
            ],
        )
    return html


def _segment_sizes(reader: _Reader) -> str:
    rows = reader.rows(
        "segment_summaries",
        "select dimension, segment_value, customers, share_of_customers, aum_total_cny, "
        "aum_mean_cny, churn_probability_mean from {t} order by dimension, aum_mean_cny, "
        "segment_value",
    )
    if not rows:
        return _note("segment_summaries is not published for this date.")
    parts = []
    for dimension in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == dimension]
        labels = [str(r[1]) for r in mine]
        parts.append(
            f"<h3>{escape(dimension)}</h3><div class='charts'>"
            + hbar_chart(labels, [r[2] for r in mine], title=f"customers by {dimension}")
            + hbar_chart(
                labels, [float(r[4] or 0) for r in mine], title=f"AUM (CNY) by {dimension}"
            )
            + "</div>"
            + _table(
                ["value", "customers", "share", "AUM total CNY", "AUM mean CNY", "churn p mean"],
                [[r[1], r[2], r[3], r[4], r[5], r[6]] for r in mine],
            )
        )
    return "".join(parts)


def _migrations(reader: _Reader) -> str:
    rows = reader.rows(
        "segment_migrations",
        "select dimension, previous_as_of, from_value, to_value, customers from {t}",
    )
    if rows is None:
        return _note("segment_migrations is not published for this date.")
    if all(r[1] is None for r in rows):
        return _note("No earlier run to compare with: this is the first as-of date.")
    parts = [_note(f"Previous as-of: {rows[0][1]}. Rows: before; columns: now.")]
    for dimension in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == dimension]
        before = sorted({r[2] for r in mine})
        after = sorted({r[3] for r in mine})
        counts = {(r[2], r[3]): r[4] for r in mine}
        moved = sum(n for (f, t), n in counts.items() if f != t)
        matrix = [[f, *[counts.get((f, t), 0) for t in after]] for f in before]
        parts.append(
            f"<h3>{escape(dimension)}: {moved:,} customers moved</h3>"
            + _table(["from \\ to", *after], matrix)
        )
    return "".join(parts)


def _clusters(reader: _Reader) -> str:
    rows = reader.rows(
        "cluster_profiles",
        "select cluster_id, cluster_label, customers, share_of_customers, status, "
        "mean_aum_avg_cny, mean_txn_count_90d, mean_product_families_held, mean_age_years, "
        "mean_tenure_days from {t} order by cluster_id",
    )
    if not rows:
        return _note("cluster_profiles is not published for this date.")
    fits = reader.rows("model_fits", "select term, value from {t}", "clusters")
    terms = dict(fits or [])
    chart = hbar_chart(
        [f"{r[0]}: {r[1]}"[:28] for r in rows], [r[2] for r in rows], title="customers per cluster"
    )
    stability = terms.get("bootstrap_ari_mean")
    return (
        _note(
            f"k = {int(terms['k']) if 'k' in terms else '?'}; bootstrap stability (adjusted "
            f"Rand index) {_show(stability)}. Ids are matched to the previous run's clusters."
        )
        + chart
        + _table(
            [
                "cluster",
                "label",
                "customers",
                "share",
                "status",
                "AUM mean",
                "txn 90d",
                "product families",
                "age",
                "tenure days",
            ],
            [list(r) for r in rows],
        )
    )


def _churn(reader: _Reader, config: Config) -> str:
    versions = reader.rows("churn_scores", "select distinct model_version from {t}")
    if not versions:
        return _note("churn_scores is not published for this date.")
    metadata_path = config.paths.models / "churn_scores" / versions[0][0] / "metadata.json"
    if not metadata_path.exists():
        return _note(f"The churn model {versions[0][0]} is no longer in {config.paths.models}.")
    meta = json.loads(metadata_path.read_text())
    names = ("roc_auc", "pr_auc", "lift_top_decile", "calibration_error", "positive_rate")
    metrics = _table(
        ["metric (out of time)", "model", "recency baseline"],
        [[n, meta["metrics"].get(n), meta["baseline_metrics"].get(n)] for n in names],
    )
    facts = _note(
        f"Model {versions[0][0]}, trained on {meta['trained_on']} from snapshots "
        f"{meta['snapshots'][0]} to {meta['snapshots'][-1]}; tested on {meta['test_snapshots']}"
        f" ({meta['test_rows']:,} examples); {meta['training_rows']:,} training and "
        f"{meta['calibration_rows']:,} calibration examples."
    )
    charts = []
    lift = meta.get("lift")
    if lift:
        charts.append(
            grouped_bar_chart(
                [str(r["decile"]) for r in lift["model"]],
                {
                    "model": [r["lift"] for r in lift["model"]],
                    "recency baseline": [r["lift"] for r in lift["baseline"]],
                },
                title="Lift chart: churn rate per score decile over the overall rate",
                y_label="lift",
                reference=1.0,
            )
        )
    calibration = meta.get("calibration") or []
    if calibration:
        charts.append(
            line_chart(
                [f"{r['predicted']:.2f}" for r in calibration],
                {"observed churn rate": [r["observed"] for r in calibration]},
                x_values=[r["predicted"] for r in calibration],
                title="Calibration plot: observed rate against predicted probability",
                y_label="observed",
                y_range=(
                    0.0,
                    max(1e-9, *(max(r["observed"], r["predicted"]) for r in calibration)),
                ),
                diagonal=True,
            )
        )
    if not lift:
        charts.append(
            _note(
                "This model was saved before lift tables were kept; it is retrained"
                " at the next retrain date."
            )
        )
    bands = reader.rows(
        "churn_scores",
        "select churn_risk_band, count(*), avg(churn_probability) from {t} group by all "
        "order by 3 desc",
    )
    return (
        facts
        + metrics
        + f"<div class='charts'>{''.join(charts)}</div>"
        + _table(["risk band", "customers", "mean probability"], [list(b) for b in bands or []])
    )


def _nbp(config: Config, as_of: date) -> str:
    folder = config.paths.warehouse / "evaluations"
    found = sorted(
        (p for p in folder.glob("nbp_*.json") if p.stem.removeprefix("nbp_") <= as_of.isoformat()),
        key=lambda p: p.stem,
    )
    if not found:
        return _note(
            "No evaluation yet: `custseg evaluate nbp --as-of <a date 90 days back>` replays the "
            "lists of a past date and scores them against what customers took up."
        )
    figures = json.loads(found[-1].read_text())
    k = figures["top_k"]
    rows = [
        [
            method,
            f["customers"],
            f["acquirers"],
            f["hit_rate_at_k"],
            f["precision_at_k"],
            f["coverage"],
        ]
        for method, f in ((m, figures[m]) for m in ("blend", "popularity"))
    ]
    return _note(
        f"Lists of {figures['as_of']} scored on the {figures['horizon_days']} days after "
        f"(data known on {figures['known_on']})."
    ) + _table(
        ["method", "customers", "took up a product", f"hit rate@{k}", f"precision@{k}", "coverage"],
        rows,
    )


def _coverage(reader: _Reader) -> str:
    rows = reader.rows(
        "feature_coverage",
        "select feature_group, coverage_share, min_share, is_below_minimum, customers_covered "
        "from {t} order by feature_group",
    )
    if not rows:
        return _note("feature_coverage is not published for this date.")
    return hbar_chart(
        [r[0] for r in rows],
        [float(r[1]) for r in rows],
        title="share of customers covered",
        formatter=lambda v: f"{v:.1%}",
    ) + _table(
        ["feature group", "coverage", "minimum", "below minimum", "customers covered"],
        [list(r) for r in rows],
    )


def _backtest(config: Config, as_of: date) -> str:
    result = latest_backtest(config, as_of)
    if result is None:
        return _note(
            "No backtest yet: `custseg backtest --from 2026-03-31 --to 2026-07-31 --step 1M` "
            "replays past dates and scores churn, next-best-product and cluster stability."
        )
    rows = result["dates"]
    labels = [r["as_of"] for r in rows]
    chart = line_chart(
        labels,
        {
            "churn ROC AUC": [r["churn_roc_auc"] for r in rows],
            "churn baseline AUC": [r["churn_baseline_roc_auc"] for r in rows],
            "NBP hit rate@k": [r["nbp_hit_rate_at_k"] for r in rows],
            "NBP popularity hit@k": [r["nbp_baseline_hit_rate_at_k"] for r in rows],
            "cluster ARI vs previous": [r["cluster_ari_previous"] for r in rows],
        },
        title="Backtest: out-of-time figures per as-of date",
        y_label="score",
        y_range=(0.0, 1.0),
        width=760,
    )
    table = _table(
        [
            "as of",
            "churn AUC",
            "baseline AUC",
            "PR AUC",
            "lift top 10%",
            "NBP hit@k",
            "popularity hit@k",
            "NBP precision@k",
            "clusters ARI vs previous",
            "same cluster id",
            "bootstrap ARI",
        ],
        [
            [
                r["as_of"],
                r["churn_roc_auc"],
                r["churn_baseline_roc_auc"],
                r["churn_pr_auc"],
                r["churn_lift_top_decile"],
                r["nbp_hit_rate_at_k"],
                r["nbp_baseline_hit_rate_at_k"],
                r["nbp_precision_at_k"],
                r["cluster_ari_previous"],
                r["cluster_same_id_share"],
                r["cluster_bootstrap_ari"],
            ]
            for r in rows
        ],
    )
    return (
        _note(
            f"Backtest {result['from']} to {result['to']} by {result['step']} (data known on "
            f"{result['known_on']}); empty cells: the horizon was not over, or no previous date."
        )
        + chart
        + table
    )
