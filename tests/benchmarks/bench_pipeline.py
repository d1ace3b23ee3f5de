"""Benchmark: generate + a full nightly run, printing time, rows/s and peak memory.

Not a test: it prints figures and never fails on a timing. Each phase runs in a fresh child
process so its peak resident memory (ru_maxrss of the child) is its own.

    python tests/benchmarks/bench_pipeline.py --customers 100000 [--format csv|parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from tests.ground_truth import agreement_rates  # noqa: E402

# runs the CLI in the child and reports that child's own peak resident memory on exit
_CHILD = """
import json, resource, sys
from pipeline.cli import main
sys.argv = ["custseg", *sys.argv[1:]]
try:
    main()
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write(json.dumps({"event": "bench_peak_rss", "kib": peak}) + "\\n")
"""


def _phase(name: str, args: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"{name} failed with exit code {completed.returncode}")
    log = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    peak_kib = next(r["kib"] for r in log if r["event"] == "bench_peak_rss")
    return {
        "phase": name,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024),
        "log": log,
    }


MODEL_TERMS = {
    "churn_gbm": (
        "roc_auc",
        "baseline_roc_auc",
        "pr_auc",
        "baseline_pr_auc",
        "lift_top_decile",
        "baseline_lift_top_decile",
        "calibration_error",
        "training_rows",
    ),
    "bg_nbd": (
        "holdout_predicted_transactions",
        "holdout_actual_transactions",
        "holdout_mae_per_customer",
        "customers",
    ),
    "kmeans": ("k", "bootstrap_ari_mean", "fit_rows"),
}


def _model_figures(config) -> dict[str, dict[str, float]]:
    import duckdb

    files = str(config.paths.warehouse / "model_fits" / "*" / "*.parquet")
    rows = duckdb.sql(f"select model, term, value from read_parquet('{files}')").fetchall()
    return {
        model: {term: value for m, term, value in rows if m == model and term in terms}
        for model, terms in MODEL_TERMS.items()
    }


def _model_lines(models: dict[str, dict[str, float]]) -> list[str]:
    churn, clv, kmeans = models["churn_gbm"], models["bg_nbd"], models["kmeans"]
    return [
        f"churn: ROC AUC {churn['roc_auc']:.3f} (recency baseline {churn['baseline_roc_auc']:.3f})"
        f", PR AUC {churn['pr_auc']:.3f} ({churn['baseline_pr_auc']:.3f}), top-decile lift "
        f"{churn['lift_top_decile']:.2f} ({churn['baseline_lift_top_decile']:.2f}), "
        f"calibration error {churn['calibration_error']:.3f}, "
        f"{churn['training_rows']:,.0f} training rows",
        f"CLV: holdout transactions predicted {clv['holdout_predicted_transactions']:,.0f}, "
        f"actual {clv['holdout_actual_transactions']:,.0f}, MAE per customer "
        f"{clv['holdout_mae_per_customer']:.2f}",
        f"clusters: k={kmeans['k']:.0f}, bootstrap ARI {kmeans['bootstrap_ari_mean']:.2f}, "
        f"fitted on {kmeans['fit_rows']:,.0f} customers",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--format", default="csv", choices=["csv", "parquet"])
    parser.add_argument("--output", type=Path, default=REPO / "bench-results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="custseg-bench-") as root:
        config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
        config["paths"] = {
            k: str(Path(root) / k)
            for k in ("landing", "staging", "warehouse", "ground_truth", "temp", "models")
        }
        config["generate"]["customers"] = args.customers
        config["generate"]["file_format"] = args.format
        config_path = Path(root) / "bench.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        env = {**os.environ, "CUSTSEG_PSEUDONYMISATION_SALT": "bench"}
        common = ["--config", str(config_path), "--log-format", "json"]

        generate = _phase("generate", ["generate", *common], env)
        rows = next(r["rows"] for r in generate["log"] if r["event"] == "generated")
        run = _phase("run", ["run", "--as-of", "latest", *common], env)
        landing_bytes = sum(p.stat().st_size for p in Path(root, "landing").rglob("*.*"))
        resolved = load_config(config_path, environ={})
        agreement = agreement_rates(resolved, resolved.generate.end_on)
        models = _model_figures(resolved)

    total_rows = sum(rows.values())
    stages = [r for r in run["log"] if r["event"] == "stage_finished"]
    report = {
        "customers": args.customers,
        "format": args.format,
        "cpu_count": os.cpu_count(),
        "rows_generated": rows,
        "landing_mib": round(landing_bytes / 2**20),
        "generate": {k: generate[k] for k in ("seconds", "peak_rss_mib")}
        | {"rows_per_second": round(total_rows / generate["seconds"])},
        "run": {k: run[k] for k in ("seconds", "peak_rss_mib")}
        | {"input_rows_per_second": round(total_rows / run["seconds"])},
        "stages": {s["stage"]: {"seconds": s["seconds"], "rows": s["rows"]} for s in stages},
        "models": models,
        "ground_truth_agreement": {
            check: {"share": round(share, 4), "customers": count}
            for check, (share, count) in agreement.items()
        },
    }
    print(
        f"custseg benchmark: {args.customers:,} customers, {args.format} extracts, "
        f"{os.cpu_count()} cores"
    )
    print(f"  extracts        {total_rows:>13,} rows  {report['landing_mib']:>6,} MiB")
    for phase in ("generate", "run"):
        figures = report[phase]
        rate = figures.get("rows_per_second") or figures.get("input_rows_per_second")
        print(
            f"  {phase:<15} {figures['seconds']:>10.1f} s  {rate:>12,} rows/s  "
            f"peak {figures['peak_rss_mib']:>6,} MiB"
        )
    for name, stage in report["stages"].items():
        rows_text = f"{stage['rows']:,}" if stage["rows"] is not None else "-"
        print(f"    {name:<20} {stage['seconds']:>8.2f} s  {rows_text:>13} rows out")
    print("  models (out of time / holdout):")
    for line in _model_lines(models):
        print(f"    {line}")
    print("  agreement with the generator's ground truth:")
    for check, figures in report["ground_truth_agreement"].items():
        print(f"    {figures['share']:>6.1%}  of {figures['customers']:>9,}  {check}")
    args.output.mkdir(parents=True, exist_ok=True)
    target = args.output / f"bench_{args.customers}_{args.format}.json"
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  saved {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")


if __name__ == "__main__":
    main()
