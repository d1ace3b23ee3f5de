"""Benchmark: generate, then an initial and a nightly run, per bank size; prints and saves
time, rows/s and peak memory per phase and stage.

Not a test: it prints figures and never fails on a timing. Each phase runs in a fresh child
process so its peak resident memory is its own (the child's, or its GX validation child's,
whichever is larger). Per size:
    generate       the sample bank, Parquet extracts by default (a backfill + 3 nightly files)
    initial        `run --as-of <the day before the last>`: ingests the backfill and the first
                   two nights, trains every model
    nightly        `run --as-of latest`: ingests the last night's extracts, reuses the models -
                   the run a scheduler starts every night
    nightly_2gib   (--memory-check) the nightly run again, from copies of the warehouse and
                   staging as the initial run left them, with DuckDB's memory_limit at 2 GiB:
                   time per stage, and whether every table it publishes equals the nightly run's
    bare scan      DuckDB reading the staged transaction columns customer_features reads; the
                   customer_features stage's time is reported as a multiple of it

    python tests/benchmarks/bench_pipeline.py --customers 100000 1000000 [--memory-check]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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

# runs the CLI in the child and reports that child's own peak resident memory on exit. Its
# own is VmHWM, the high-water mark of the memory exec gave it: Linux carries the parent's
# resident size at fork into a child's ru_maxrss (a child of a 2.9 GB process reported 2,886
# MiB, its VmHWM 10 MB), so after the 5M bank every phase at 100k reported 16,478 MiB
_CHILD = """
import json, resource, sys
from pipeline.cli import main
sys.argv = ["custseg", *sys.argv[1:]]

def own_peak_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux

try:
    main()
finally:
    # the GX validation children fork from this process: what they carry over is at most
    # this process's own peak, so the larger of the two is still the run's largest process
    peak = max(own_peak_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stderr.write(json.dumps({"event": "bench_peak_rss", "kib": peak}) + "\\n")
"""


def _phase(name: str, args: list[str], env: dict[str, str], must_pass: bool = True) -> dict:
    """Run one CLI command in a child; a failure stops the benchmark unless not must_pass,
    when it is returned as the phase's figures with "failed" (the error) set."""
    print(f"  {name} ...", flush=True)
    started = time.perf_counter()
    cpu_before = _children_cpu_seconds()
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu_seconds() - cpu_before  # the phase's and its GX children's
    if completed.returncode != 0:
        # every stage that finished before the failure, then the end of the log
        finished = [
            line
            for line in completed.stderr.splitlines()
            if '"event": "stage_finished"' in line or '"event": "extract_loaded"' in line
        ]
        sys.stderr.write("\n".join(finished) + "\n" + completed.stderr[-5000:])
        failure = f"{name} failed with exit code {completed.returncode} after {seconds:.1f} s"
        if must_pass:
            raise SystemExit(failure)
    log = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    peak_kib = next((r["kib"] for r in log if r["event"] == "bench_peak_rss"), 0)
    errors = [r["message"].splitlines()[0] for r in log if r["event"] == "error"]
    return {
        "phase": name,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "failed": (errors[-1] if errors else failure) if completed.returncode else None,
        "log": log,
    }


def _children_cpu_seconds() -> float:
    """User + system CPU of every child process waited for so far (grandchildren included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


TXN_COLUMNS = ("customer_id", "transaction_at", "amount_cny", "direction", "channel", "category")


def _bare_scan(staging: Path) -> dict:
    """Seconds for DuckDB to read the staged transaction columns customer_features reads (best
    of 3), and the rows read."""
    import duckdb

    files = str(staging / "stg_transactions" / "*" / "data.parquet")
    reads = ", ".join(f"max({c})" for c in TXN_COLUMNS)
    best, rows = float("inf"), 0
    with duckdb.connect() as con:
        for _ in range(3):
            started = time.perf_counter()
            rows = con.execute(f"select count(*), {reads} from read_parquet('{files}')").fetchone()[
                0
            ]
            best = min(best, time.perf_counter() - started)
    return {"seconds": round(best, 3), "rows": rows, "rows_per_second": round(rows / best)}


def _tables_equal(first: Path, second: Path, as_of) -> dict:
    """Rows that differ between two warehouses' partitions for `as_of`, per table."""
    import duckdb

    differing = {}
    with duckdb.connect() as con:
        for ours in sorted(first.glob(f"*/as_of={as_of}/*.parquet")):
            relative = ours.relative_to(first)
            theirs = second / relative
            if relative.parts[0] == "run_manifests" or not theirs.exists():
                continue
            differing[str(relative)] = con.execute(
                f"select count(*) from ((from '{ours}' except all from '{theirs}') "
                f"union all (from '{theirs}' except all from '{ours}'))"
            ).fetchone()[0]
    return differing


def _stage_rows(phase: dict) -> dict:
    stages = [r for r in phase["log"] if r["event"] == "stage_finished"]
    validated = next((r for r in phase["log"] if r["event"] == "validated"), None)
    table = {
        s["stage"]: {
            "seconds": s["seconds"],
            "rows": s["rows"],
            "rows_per_second": round(s["rows"] / s["seconds"])
            if s["rows"] and s["seconds"]
            else None,
        }
        for s in stages
    }
    if validated:
        table["validation"] = {
            "seconds": validated.get("seconds"),
            "rows": validated["expectations"],  # expectations checked
            "rows_per_second": None,
        }
    return table


PHASE_FIGURES = ("seconds", "cpu_seconds", "peak_rss_mib")


def bench_size(customers: int, file_format: str, memory_check: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="custseg-bench-") as root:
        config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
        folders = ("landing", "staging", "warehouse", "ground_truth", "temp", "models")
        config["paths"] = {k: str(Path(root) / k) for k in folders}
        config["generate"]["customers"] = customers
        config["generate"]["file_format"] = file_format
        config_path = Path(root) / "bench.yaml"
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        env = {**os.environ, "CUSTSEG_PSEUDONYMISATION_SALT": "bench"}
        common = ["--config", str(config_path), "--log-format", "json"]
        resolved = load_config(config_path, environ={})
        # the initial run takes everything but the last night, so the nightly run is one night
        initial_on = resolved.generate.end_on.fromordinal(resolved.generate.end_on.toordinal() - 1)

        print(f"{customers:,} customers:", flush=True)
        generate = _phase("generate", ["generate", *common], env)
        rows = next(r["rows"] for r in generate["log"] if r["event"] == "generated")
        initial = _phase(
            "initial", ["run", "--as-of", str(initial_on), "--no-report", *common], env
        )
        if memory_check:  # the 2 GiB re-run starts where the nightly starts: its own copy of
            # the warehouse and staging, so it too ingests and checks the last night's extracts
            shutil.copytree(resolved.paths.warehouse, Path(root) / "warehouse_2gib")
            shutil.copytree(resolved.paths.staging, Path(root) / "staging_2gib")
        nightly = _phase("nightly", ["run", "--as-of", "latest", "--no-report", *common], env)
        scan = _bare_scan(resolved.paths.staging)
        landing_bytes = sum(p.stat().st_size for p in Path(root, "landing").rglob("*.*"))
        agreement = agreement_rates(resolved, resolved.generate.end_on)
        models = _model_figures(resolved)
        constrained = None
        if memory_check:
            limited = dict(config)
            limited["paths"] = {
                **config["paths"],
                "warehouse": str(Path(root) / "warehouse_2gib"),
                "staging": str(Path(root) / "staging_2gib"),
            }
            limited["engine"] = {**config["engine"], "memory_limit": "2GB"}
            limited_path = Path(root) / "bench_2gib.yaml"
            limited_path.write_text(yaml.safe_dump(limited, allow_unicode=True), encoding="utf-8")
            phase = _phase(
                "nightly_2gib",
                [
                    "run",
                    "--as-of",
                    "latest",
                    "--no-report",
                    "--config",
                    str(limited_path),
                    "--log-format",
                    "json",
                ],
                env,
                must_pass=False,  # a failure at 2 GB is a finding: reported, not fatal
            )
            differing = (
                {}
                if phase["failed"]
                else _tables_equal(
                    resolved.paths.warehouse,
                    Path(limited["paths"]["warehouse"]),
                    resolved.generate.end_on,
                )
            )
            constrained = {
                "seconds": phase["seconds"],
                "cpu_seconds": phase["cpu_seconds"],
                "peak_rss_mib": phase["peak_rss_mib"],
                "failed": phase["failed"],
                "stages": _stage_rows(phase),
                "tables_compared": len(differing),
                "tables_differing": {t: n for t, n in differing.items() if n},
            }

    total_rows = sum(rows.values())
    nightly_stages = _stage_rows(nightly)
    features = nightly_stages.get("customer_features", {}).get("seconds")
    return {
        "customers": customers,
        "format": file_format,
        "cpu_count": os.cpu_count(),
        "rows_generated": rows,
        "landing_mib": round(landing_bytes / 2**20),
        "generate": {k: generate[k] for k in PHASE_FIGURES}
        | {"rows_per_second": round(total_rows / generate["seconds"])},
        "initial": {k: initial[k] for k in PHASE_FIGURES} | {"stages": _stage_rows(initial)},
        "nightly": {k: nightly[k] for k in PHASE_FIGURES} | {"stages": nightly_stages},
        "nightly_2gib": constrained,
        "bare_transaction_scan": scan,
        "customer_features_vs_bare_scan": round(features / scan["seconds"], 1)
        if features
        else None,
        "models": models,
        "ground_truth_agreement": {
            check: {"share": round(share, 4), "customers": count}
            for check, (share, count) in agreement.items()
        },
    }


def _cores(figures: dict) -> str:
    """CPU seconds and the cores they kept busy on average over the phase."""
    cpu = figures["cpu_seconds"]
    return f"cpu {cpu:,.1f} s ({cpu / figures['seconds']:.2f} cores)"


def _print(report: dict) -> None:
    print(
        f"custseg benchmark: {report['customers']:,} customers, {report['format']} extracts, "
        f"{report['cpu_count']} cores"
    )
    rows = sum(report["rows_generated"].values())
    print(f"  extracts        {rows:>13,} rows  {report['landing_mib']:>6,} MiB")
    g = report["generate"]
    print(
        f"  generate        {g['seconds']:>10.1f} s  {g['rows_per_second']:>12,} rows/s  "
        f"peak {g['peak_rss_mib']:>6,} MiB  {_cores(g)}"
    )
    for phase in ("initial", "nightly"):
        figures = report[phase]
        print(
            f"  {phase:<15} {figures['seconds']:>10.1f} s  peak {figures['peak_rss_mib']:>6,} MiB"
            f"  {_cores(figures)}"
        )
        for name, stage in figures["stages"].items():
            if stage.get("seconds") is None:
                continue
            rate = f"{stage['rows_per_second']:,}" if stage["rows_per_second"] else "-"
            rows_text = f"{stage['rows']:,}" if stage["rows"] is not None else "-"
            print(
                f"    {name:<20} {stage['seconds']:>8.2f} s  {rows_text:>13} rows  "
                f"{rate:>12} rows/s"
            )
    scan = report["bare_transaction_scan"]
    print(
        f"  bare scan of {scan['rows']:,} staged transactions: {scan['seconds']:.2f} s "
        f"({scan['rows_per_second']:,} rows/s); customer_features = "
        f"{report['customer_features_vs_bare_scan']}x of it"
    )
    constrained = report["nightly_2gib"]
    if constrained and constrained["failed"]:
        print(
            f"  nightly at memory_limit 2GB: FAILED after {constrained['seconds']:.1f} s, peak "
            f"{constrained['peak_rss_mib']:,} MiB: {constrained['failed']}"
        )
    elif constrained:
        same = "same" if not constrained["tables_differing"] else "DIFFERENT"
        print(
            f"  nightly at memory_limit 2GB: {constrained['seconds']:.1f} s, peak "
            f"{constrained['peak_rss_mib']:,} MiB, {_cores(constrained)}; "
            f"{constrained['tables_compared']} tables, "
            f"{same} rows {constrained['tables_differing'] or ''}"
        )
    print("  models (out of time / holdout):")
    for line in _model_lines(report["models"]):
        print(f"    {line}")
    print("  agreement with the generator's ground truth:")
    for check, figures in report["ground_truth_agreement"].items():
        print(f"    {figures['share']:>6.1%}  of {figures['customers']:>9,}  {check}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000])
    parser.add_argument("--format", default="parquet", choices=["csv", "parquet"])
    parser.add_argument(
        "--memory-check", action="store_true", help="re-run the nightly at memory_limit 2GB"
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench-results")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    reports = []
    for customers in args.customers:
        report = bench_size(customers, args.format, args.memory_check)
        reports.append(report)
        _print(report)
        target = args.output / f"bench_{customers}_{args.format}.json"
        target.write_text(json.dumps(report, indent=2) + "\n")
        print(f"  saved {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
    if len(reports) > 1:
        print("growth with size (nightly run):")
        print(
            f"  {'customers':>10} {'generate s':>11} {'initial s':>10} {'nightly s':>10} "
            f"{'nightly MiB':>12} {'features s':>11} {'x bare scan':>12}"
        )
        for r in reports:
            print(
                f"  {r['customers']:>10,} {r['generate']['seconds']:>11.1f} "
                f"{r['initial']['seconds']:>10.1f} {r['nightly']['seconds']:>10.1f} "
                f"{r['nightly']['peak_rss_mib']:>12,} "
                f"{r['nightly']['stages']['customer_features']['seconds']:>11.2f} "
                f"{r['customer_features_vs_bare_scan']:>12}"
            )
        summary = args.output / f"bench_summary_{args.format}.json"
        summary.write_text(json.dumps(reports, indent=2) + "\n")
        print(f"  saved {summary.relative_to(REPO) if summary.is_relative_to(REPO) else summary}")


if __name__ == "__main__":
    main()
