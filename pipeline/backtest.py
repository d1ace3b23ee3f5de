"""Backtest: replay the pipeline over past as-of dates and score what it said against what then
happened.

For each date D from --from to --to by --step (1M = month by month, month ends stay month ends;
also 2W, 10D ...), the stages BACKTESTED are replayed for D into one scratch warehouse and model
folder (today's extracts, rows dated up to D: `run_stages(known_on=)`), in date order, so each
date's models are trained with what was known on D and its cluster ids are matched to the
previous backtest date's. Per date:
    churn   the scores of D against the labels of the horizon after D (same label as
            training, eligible customers): ROC AUC, PR AUC, top-decile lift, calibration
            error, and ROC AUC of the recency-only baseline
    nbp     hit rate, precision and coverage at k of the lists of D, and of the popularity
            baseline, against the products taken up in the horizon after D (pipeline.evaluate)
    clusters  k, the bootstrap ARI of D's fit, and against the previous backtest date: the
            adjusted Rand index and the share of customers who kept their cluster id
A date whose horizon is not over by the latest staged data has its churn and nbp figures left
empty (horizon_over = false). The result is saved as JSON under <warehouse>/backtests/ and shown
as a table and chart in the run report.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from calendar import monthrange
from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score

from models.churn import evaluate
from pipeline.config import Config
from pipeline.errors import UsageError
from pipeline.evaluate import known_today, replay_config, score_lists
from pipeline.ingest import register_staged_views
from pipeline.log import Reporter
from pipeline.registry import STAGES_BY_NAME
from pipeline.runner import run_stages
from pipeline.warehouse import partition_path
from transforms.churn_scores import churn_labels
from transforms.staging import literal

BACKTESTED = (
    "customer_features",
    "aum_tiers",
    "risk_profiles",
    "clusters",
    "churn_scores",
    "product_rules",
    "next_best_products",
)
STEP = re.compile(r"^(\d+)([MWD])$")


def backtest_dates(start: date, end: date, step: str) -> list[date]:
    """Dates from start to end (inclusive) by step: <n>M months (a month end stays a month
    end), <n>W weeks or <n>D days."""
    match = STEP.match(step.upper())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--step {step!r}: expected a count and a unit, e.g. 1M, 2W or 10D")
    if end < start:
        raise UsageError(f"--from {start} is after --to {end}")
    count, unit = int(match.group(1)), match.group(2)
    month_end = start.day == monthrange(start.year, start.month)[1]
    dates, number = [], 0
    while True:
        if unit == "M":
            months = start.month - 1 + number * count
            year, month = start.year + months // 12, months % 12 + 1
            last = monthrange(year, month)[1]
            day = date(year, month, last if month_end else min(start.day, last))
        else:
            day = start + timedelta(days=number * count * (7 if unit == "W" else 1))
        if day > end:
            return dates
        dates.append(day)
        number += 1


def run_backtest(config: Config, start: date, end: date, step: str, reporter: Reporter) -> dict:
    dates = backtest_dates(start, end, step)
    known_on = known_today(config)
    if dates[-1] > known_on:
        raise UsageError(f"--to {end}: after the latest staged data ({known_on})")
    scratch = config.paths.temp / f"backtest-{start}-{end}"
    shutil.rmtree(scratch, ignore_errors=True)
    replay = replay_config(config, scratch)
    stages = [STAGES_BY_NAME[s] for s in BACKTESTED]
    rows: list[dict] = []
    clock = time.perf_counter()
    try:
        previous = None
        for number, as_of in enumerate(dates, start=1):
            reporter.info(
                f"backtest {number}/{len(dates)}: replaying {as_of} (known on {known_on})"
            )
            run_stages(replay, as_of, stages, reporter, known_on=known_on)
            rows.append(_figures(replay, as_of, known_on, previous))
            previous = as_of
            reporter.info("  " + _line(rows[-1]), event="backtest_date", **rows[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "step": step.upper(),
        "known_on": known_on.isoformat(),
        "seconds": round(time.perf_counter() - clock, 1),
        "dates": rows,
    }
    target = config.paths.warehouse / "backtests" / f"backtest_{start}_{end}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    result["saved_to"] = str(target)
    return result


def latest_backtest(config: Config, on_or_before: date) -> dict | None:
    """The newest saved backtest whose last date is on or before the given date."""
    found = []
    for path in (config.paths.warehouse / "backtests").glob("backtest_*.json"):
        result = json.loads(path.read_text())
        if date.fromisoformat(result["to"]) <= on_or_before:
            found.append((path.stat().st_mtime, result))
    return max(found, key=lambda f: f[0])[1] if found else None


def _line(row: dict) -> str:
    def show(value, pattern="{:.3f}"):
        return "-" if value is None else pattern.format(value)

    return (
        f"churn AUC {show(row['churn_roc_auc'])} (baseline {show(row['churn_baseline_roc_auc'])})"
        f", NBP hit@k {show(row['nbp_hit_rate_at_k'], '{:.1%}')} (popularity "
        f"{show(row['nbp_baseline_hit_rate_at_k'], '{:.1%}')}), clusters ARI vs previous "
        f"{show(row['cluster_ari_previous'])}"
    )


def _figures(config: Config, as_of: date, known_on: date, previous: date | None) -> dict:
    churn_horizon = config.churn_scores.horizon_days
    nbp = config.next_best_products
    row: dict = {"as_of": as_of.isoformat()}
    row.update(_churn_figures(config, as_of, known_on, churn_horizon))
    if as_of + timedelta(days=nbp.horizon_days) <= known_on:
        lists = score_lists(config, as_of, known_on, nbp.horizon_days, nbp.top_k)
        blend, baseline = lists["blend"], lists["popularity"]
    else:
        blend = baseline = {}
    row.update(
        nbp_horizon_over=bool(blend),
        nbp_acquirers=blend.get("acquirers"),
        nbp_hit_rate_at_k=blend.get("hit_rate_at_k"),
        nbp_precision_at_k=blend.get("precision_at_k"),
        nbp_coverage=blend.get("coverage"),
        nbp_baseline_hit_rate_at_k=baseline.get("hit_rate_at_k"),
        nbp_baseline_precision_at_k=baseline.get("precision_at_k"),
    )
    row.update(_cluster_figures(config, as_of, previous))
    return row


def _read(config: Config, table: str, as_of: date, part: str = "data") -> pl.DataFrame:
    return pl.read_parquet(partition_path(config.paths.warehouse, table, as_of, part))


def _churn_figures(config: Config, as_of: date, known_on: date, horizon: int) -> dict:
    empty = {
        "churn_horizon_over": False,
        "churn_examples": None,
        "churn_rate": None,
        "churn_roc_auc": None,
        "churn_pr_auc": None,
        "churn_lift_top_decile": None,
        "churn_calibration_error": None,
        "churn_baseline_roc_auc": None,
    }
    if as_of + timedelta(days=horizon) > known_on:
        return empty
    features = partition_path(config.paths.warehouse, "customer_features", as_of)
    scores = partition_path(config.paths.warehouse, "churn_scores", as_of)
    with duckdb.connect() as con:
        present = register_staged_views(con, config.paths.staging, known_on)
        con.execute(
            f"create view features_then as select * from read_parquet({literal(str(features))})"
        )
        churn_labels(
            con,
            "features_then",
            stg_transactions="stg_transactions",
            stg_balances="stg_balances" if "balances" in present else None,
            stg_products="stg_products" if "products" in present else None,
            stg_events="stg_events" if "events" in present else None,
            params=config.churn_scores,
            snapshot=as_of,
        ).create_view("labels")
        frame = con.sql(
            f"""
            select s.churn_probability, f.days_since_last_activity, l.is_churned
            from read_parquet({literal(str(scores))}) s
            join features_then f using (customer_id)
            join labels l using (customer_id)
            where l.is_eligible
            """
        ).pl()
    y = frame["is_churned"].cast(pl.Int8).to_numpy()
    if len(y) == 0 or y.min() == y.max():
        return {**empty, "churn_horizon_over": True, "churn_examples": len(y)}
    model = evaluate(y, frame["churn_probability"].to_numpy())
    recency = frame["days_since_last_activity"].fill_null(10_000).to_numpy().astype(float)
    baseline = evaluate(y, recency, probability=False)
    return {
        "churn_horizon_over": True,
        "churn_examples": len(y),
        "churn_rate": model["positive_rate"],
        "churn_roc_auc": model["roc_auc"],
        "churn_pr_auc": model["pr_auc"],
        "churn_lift_top_decile": model["lift_top_decile"],
        "churn_calibration_error": model["calibration_error"],
        "churn_baseline_roc_auc": baseline["roc_auc"],
    }


def _cluster_figures(config: Config, as_of: date, previous: date | None) -> dict:
    fits = _read(config, "model_fits", as_of, "clusters")
    terms = dict(zip(fits["term"], fits["value"], strict=True))
    figures = {
        "cluster_k": None if terms.get("k") is None else int(terms["k"]),
        "cluster_bootstrap_ari": terms.get("bootstrap_ari_mean"),
        "cluster_ari_previous": None,
        "cluster_same_id_share": None,
    }
    if previous is not None:
        both = _read(config, "clusters", previous).join(
            _read(config, "clusters", as_of), on="customer_id", suffix="_now"
        )
        if len(both):
            before, now = both["cluster_id"].to_numpy(), both["cluster_id_now"].to_numpy()
            figures["cluster_ari_previous"] = float(adjusted_rand_score(before, now))
            figures["cluster_same_id_share"] = float(np.mean(before == now))
    return figures
