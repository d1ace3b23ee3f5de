"""custseg: the command line. A thin shell: parse, call the library, report, exit with a code.

Exit codes: 0 success, 1 internal error, 2 usage or configuration error, 3 input error,
4 validation failed (see README.md).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipeline.config import Config, load_config
from pipeline.errors import EXIT_INTERNAL, EXIT_USAGE, CustsegError, UsageError
from pipeline.log import Reporter

app = typer.Typer(
    name="custseg",
    help=(
        "Turn a bank's raw extracts into customer segment tables.\n\n"
        "Typical night:  custseg run --as-of 2026-11-03\n\n"
        "First time:     custseg generate && custseg run --as-of latest"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
evaluate_app = typer.Typer(help="Evaluate outputs out of time.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config (default: $CUSTSEG_CONFIG or configs/default.yaml)",
        show_default=False,
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option("--log-format", help="human (terminal, progress) or json (one object per line)"),
]


class _State:
    reporter = Reporter()


def _reporter(log_format: str) -> Reporter:
    if log_format not in ("human", "json"):
        raise UsageError(f"--log-format {log_format!r}: choose human or json")
    _State.reporter = Reporter(log_format)  # type: ignore[arg-type]
    return _State.reporter


def _config(path: Path | None, **generate_overrides) -> Config:
    config = load_config(path)
    overrides = {k: v for k, v in generate_overrides.items() if v is not None}
    if overrides:
        params = config.generate.model_validate({**config.generate.model_dump(), **overrides})
        config = config.model_copy(update={"generate": params})
    return config


@app.command(
    epilog=(
        "Examples:\n\n"
        "  custseg generate                       # 20,000 customers from configs/default.yaml\n\n"
        "  custseg generate --customers 100000 --format parquet --force"
    )
)
def generate(
    customers: Annotated[int | None, typer.Option(help="number of customers")] = None,
    months: Annotated[int | None, typer.Option(help="months of history")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (same seed, same bank)")] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet extracts")
    ] = None,
    mess_rate: Annotated[float | None, typer.Option(help="share of bad rows, e.g. 0.01")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing sample bank and its staging")
    ] = False,
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Write a simulated bank's extracts (a backfill plus nightly files) to the landing folder,
    and its ground truth (personas, churn, acquisitions, injected mess) beside it."""
    from pipeline.generate import generate_bank

    reporter = _reporter(log_format)
    config = _config(
        config_path,
        customers=customers,
        months=months,
        seed=seed,
        file_format=file_format,
        mess_rate=mess_rate,
    )
    started = time.perf_counter()
    with reporter.progress("simulating customers", config.generate.customers) as advance:
        result = generate_bank(config, force=force, on_chunk=lambda done, total: advance(done))
    seconds = time.perf_counter() - started
    spec = result.spec
    reporter.info(
        f"generated {config.generate.customers:,} customers, {spec.history_start} to "
        f"{spec.end_on}: backfill {spec.backfill_on} + {len(spec.extract_dates) - 1} nightly "
        f"extracts in {config.paths.landing} ({seconds:.1f} s)",
        event="generated",
        seconds=round(seconds, 2),
        rows=result.rows_written,
    )
    for source, rows in result.rows_written.items():
        reporter.info(
            f"  {source:<15} {rows:>12,} rows", event="generated_source", source=source, rows=rows
        )


@app.command(
    epilog=(
        "Examples:\n\n"
        "  custseg run --as-of 2026-11-03                 # every stage\n\n"
        "  custseg run --as-of latest --log-format json   # for a scheduler\n\n"
        "  custseg run --as-of 2026-11-03 --only ingest   # one stage (one Airflow task)\n\n"
        "  custseg run --as-of 2026-11-03 --from rfm_scores --to aum_tiers"
    )
)
def run(
    as_of: Annotated[str, typer.Option("--as-of", help="YYYY-MM-DD, or 'latest' extract date")],
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run just this stage (repeatable)")
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="first stage to run")] = None,
    stop: Annotated[str | None, typer.Option("--to", help="last stage to run")] = None,
    reload: Annotated[
        bool, typer.Option("--reload", help="re-ingest extracts even if unchanged")
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report/--no-report",
            help="write the HTML run report at the end (also when the run fails)",
        ),
    ] = True,
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Run the pipeline's stages for one as-of date and publish their tables.

    Every table passes its expectations before it is published; the run report is written to
    <warehouse>/reports/report_<as-of>.html (see `custseg report`).
    """
    from pipeline.registry import select_stages
    from pipeline.runner import resolve_as_of, run_stages

    reporter = _reporter(log_format)
    config = _config(config_path)
    if only and (start or stop):
        raise UsageError("use --only, or --from/--to, not both")
    try:
        stages = select_stages(only, start, stop)
    except KeyError as unknown:
        from pipeline.registry import STAGE_NAMES

        raise UsageError(
            f"unknown stage {unknown.args[0]!r}; stages: {', '.join(STAGE_NAMES)}"
        ) from None
    if not stages:
        raise UsageError("--from comes after --to: no stage selected")
    day = resolve_as_of(config, as_of)
    try:
        manifest = run_stages(config, day, stages, reporter, reload=reload)
    except CustsegError:
        if report:
            _write_report(config, day, None, reporter)
        raise
    if log_format == "human":
        _print_summary(config, manifest)
    if report:
        _write_report(config, day, manifest.run_id, reporter)


def _write_report(config: Config, day: date, run_id: str | None, reporter: Reporter) -> None:
    from pipeline.report import write_report

    try:
        path = write_report(config, day, run_id)
    except Exception as error:  # noqa: BLE001 - the run's outcome stands; the report is extra
        reporter.warn(f"the run report could not be written: {error}")
        return
    reporter.info(f"  report: {path}", event="report_written", path=str(path))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  custseg report --as-of 2026-11-03\n\n"
        "  custseg report --as-of latest --output /tmp/segments.html"
    )
)
def report(
    as_of: Annotated[str, typer.Option("--as-of", help="YYYY-MM-DD, or 'latest' extract date")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="also copy the report here", show_default=False),
    ] = None,
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Write the run report for a date: one self-contained HTML file (no network resource).

    Sections: run summary, input reconciliation and rejects, validation, segment sizes and AUM,
    migrations, cluster profiles, churn model (lift chart, calibration plot), next-best-product
    evaluation, feature coverage, backtest. `custseg run` writes it at the end by default.
    """
    import shutil

    from pipeline.report import write_report
    from pipeline.runner import resolve_as_of

    reporter = _reporter(log_format)
    config = _config(config_path)
    path = write_report(config, resolve_as_of(config, as_of))
    if output is not None:
        shutil.copyfile(path, output)
        path = output
    reporter.info(f"report written: {path}", event="report_written", path=str(path))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  custseg backtest --from 2026-03-31 --to 2026-07-31 --step 1M\n\n"
        "  custseg backtest --from 2026-06-30 --to 2026-08-04 --step 2W --log-format json"
    )
)
def backtest(
    start: Annotated[str, typer.Option("--from", help="first as-of date to replay, YYYY-MM-DD")],
    stop: Annotated[str, typer.Option("--to", help="last as-of date to replay, YYYY-MM-DD")],
    step: Annotated[
        str, typer.Option("--step", help="<n>M months (month ends stay month ends), <n>W, <n>D")
    ] = "1M",
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Replay the pipeline over past as-of dates and score each against what happened next.

    Per date: churn scores against the churn labels of the horizon after it (beside the
    recency baseline), next-best-product lists against the products taken up (beside
    popularity), and cluster stability against the previous date. Dates whose horizon is not
    over by the latest staged data get no churn/NBP figures. Nothing is published; the result
    is saved under <warehouse>/backtests/ and shown in the run report.
    """
    from pipeline.backtest import run_backtest
    from pipeline.runner import resolve_as_of

    reporter = _reporter(log_format)
    config = _config(config_path)
    result = run_backtest(
        config, resolve_as_of(config, start), resolve_as_of(config, stop), step, reporter
    )
    reporter.info(
        f"backtest of {len(result['dates'])} dates in {result['seconds']:.0f} s "
        f"(data known on {result['known_on']}):"
    )
    reporter.info(
        f"  {'as of':<11} {'churn AUC':>9} {'baseline':>9} {'NBP hit@k':>10} "
        f"{'popularity':>10} {'ARI prev':>9}"
    )
    for row in result["dates"]:
        reporter.info(
            f"  {row['as_of']:<11} {_number(row['churn_roc_auc']):>9} "
            f"{_number(row['churn_baseline_roc_auc']):>9} {_share(row['nbp_hit_rate_at_k']):>10} "
            f"{_share(row['nbp_baseline_hit_rate_at_k']):>10} "
            f"{_number(row['cluster_ari_previous']):>9}"
        )
    reporter.info(f"  saved {result['saved_to']}")


def _print_summary(config: Config, manifest) -> None:
    import duckdb

    from pipeline.warehouse import partition_path

    out = typer.echo
    out(f"\nas-of {manifest.as_of}  run {manifest.run_id}  ({manifest.seconds:.1f} s)")
    for stage in manifest.stages:
        if stage.stage == "ingest" and stage.detail:
            out("  input reconciliation (read = accepted + rejected + duplicates):")
            for source, t in stage.detail["totals"].items():
                out(
                    f"    {source:<15} read {t['read']:>11,}  accepted {t['accepted']:>11,}  "
                    f"rejected {t['rejected']:>8,}  duplicates {t['duplicate']:>7,}"
                )
    segments = partition_path(
        config.paths.warehouse, "segments", date.fromisoformat(manifest.as_of)
    )
    if segments.exists():
        tiers = duckdb.sql(
            "select coalesce(service_tier, '(none)'), count(*) from read_parquet($p) "
            "group by all order by min(aum_avg_cny) nulls last",
            params={"p": str(segments)},
        ).fetchall()
        out("  customers by service tier:  " + ",  ".join(f"{t} {n:,}" for t, n in tiers))
        previous, changed = duckdb.sql(
            "select max(previous_as_of), count(*) filter (where len(changed_dimensions) > 0) "
            "from read_parquet($p)",
            params={"p": str(segments)},
        ).fetchall()[0]
        if previous:
            out(f"  customers whose segment changed since {previous}:  {changed:,}")
    out(f"  tables: {config.paths.warehouse}/<table>/as_of={manifest.as_of}/data.parquet")
    out(
        "  query:  custseg sql \"select * from segment_summaries where dimension = 'service_tier'\""
    )


@app.command()
def stages(
    config_path: ConfigOption = None,
) -> None:
    """List the stages in run order with their inputs, outputs and grain.

    Example:  custseg stages
    """
    from pipeline.registry import STAGES, upstream

    for stage in STAGES:
        typer.echo(f"{stage.name}")
        typer.echo(f"    {stage.description}")
        if stage.inputs:
            optional = f" (optional: {', '.join(stage.uses)})" if stage.uses else ""
            typer.echo(f"    reads    {', '.join(stage.requires)}{optional}")
        typer.echo(f"    after    {', '.join(upstream(stage)) or '-'}")
        written = [stage.output, *(table for table, _ in stage.extra_outputs)]
        typer.echo(
            f"    writes   {', '.join(written) if stage.output else 'stg_<source>, stg_rejects'}"
        )
        typer.echo(f"    grain    {stage.grain}")
        typer.echo(f"    config   {stage.params_block or '-'}")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  custseg validate --as-of 2026-11-03\n\n"
        "  custseg validate --as-of latest --log-format json"
    )
)
def validate(
    as_of: Annotated[str, typer.Option("--as-of", help="YYYY-MM-DD, or 'latest' extract date")],
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Run the expectation suites on the tables published for a date (exit 4 on a failure).

    The same suites gate every `custseg run` before it publishes; this runs them alone, e.g.
    after a table was replaced by hand. Results go to <warehouse>/validations/.
    """
    from pipeline.runner import resolve_as_of, validate_published

    reporter = _reporter(log_format)
    config = _config(config_path)
    results = validate_published(config, resolve_as_of(config, as_of), reporter)
    tables = sorted({r["table"] for r in results})
    reporter.info(f"  all {len(results)} expectations on {len(tables)} tables passed")


@evaluate_app.command(
    "nbp",
    epilog=(
        "Examples:\n\n"
        "  custseg evaluate nbp --as-of 2026-07-31\n\n"
        "  custseg evaluate nbp --as-of 2026-07-31 --log-format json"
    ),
)
def evaluate_nbp_command(
    as_of: Annotated[
        str, typer.Option("--as-of", help="a past date whose 90-day horizon has passed")
    ],
    config_path: ConfigOption = None,
    log_format: LogFormatOption = "human",
) -> None:
    """Replay next-best-product lists for a past date and score them against what customers
    actually took up in the horizon after it, beside a popularity baseline."""
    from pipeline.evaluate import evaluate_nbp
    from pipeline.runner import resolve_as_of

    reporter = _reporter(log_format)
    config = _config(config_path)
    figures = evaluate_nbp(config, resolve_as_of(config, as_of), reporter)
    k = figures["top_k"]
    reporter.info(
        f"next-best-product evaluation, as-of {figures['as_of']}, {figures['horizon_days']}-day "
        f"horizon (data known on {figures['known_on']}):",
        event="nbp_evaluation",
        **{m: figures[m] for m in ("blend", "popularity")},
    )
    blend = figures["blend"]
    reporter.info(
        f"  {blend['customers']:,} customers, {blend['acquirers']:,} took up "
        f"{blend['acquisitions']:,} products"
    )
    reporter.info(f"  {'method':<12} {f'hit rate@{k}':>12} {f'precision@{k}':>13} {'coverage':>9}")
    for method in ("blend", "popularity"):
        f = figures[method]
        reporter.info(
            f"  {method:<12} {_share(f['hit_rate_at_k']):>12} {_share(f['precision_at_k']):>13} "
            f"{_share(f['coverage']):>9}"
        )
    reporter.info(f"  saved {figures['saved_to']}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@config_app.command("show")
def config_show(
    config_path: ConfigOption = None,
    output_format: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print the resolved configuration (file + CUSTSEG__* environment overrides).

    Example:  CUSTSEG__ENGINE__THREADS=2 custseg config show
    """
    config = _config(config_path)
    data = config.model_dump(mode="json")
    salt = config.salt()
    data["privacy"]["salt"] = (
        f"set (from ${config.privacy.salt_env})"
        if salt
        else (
            f"not set (${config.privacy.salt_env}); ingest keeps a generated one in "
            f"{config.paths.staging}/.pseudonymisation_salt"
        )
    )
    typer.echo(f"# {config.source_file}  (config hash {config.hash()})")
    if output_format == "json":
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


@app.command(
    epilog=(
        "Examples:\n\n"
        '  custseg sql "select aum_tier, count(*) from aum_tiers group by 1"\n\n'
        "  custseg sql \"select * from rfm_scores_history where customer_id = 'C000000042'\"\n\n"
        '  custseg sql --format csv "select * from stg_rejects" > rejects.csv'
    )
)
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the warehouse views")],
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    limit: Annotated[int, typer.Option(help="rows shown in table format")] = 50,
    config_path: ConfigOption = None,
) -> None:
    """Query the published tables: each table is a view of its latest as-of, and
    <table>_history holds every as-of; stg_rejects and run_manifests are there too."""
    import duckdb

    from pipeline.warehouse import open_catalog

    config = _config(config_path)
    try:
        con = open_catalog(config.paths.warehouse)
    except FileNotFoundError:
        raise UsageError(
            f"no warehouse catalog in {config.paths.warehouse}; run `custseg run` first"
        ) from None
    try:
        relation = con.sql(query)
        if relation is None:
            return
        if output_format == "csv":
            relation.pl().write_csv(sys.stdout)
        elif output_format == "json":
            for row in relation.pl().iter_rows(named=True):
                typer.echo(json.dumps(row, default=str, ensure_ascii=False))
        else:
            _print_table(relation, limit)
    except duckdb.Error as error:
        raise UsageError(f"query failed: {str(error).splitlines()[0]}") from None


def _print_table(relation, limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    frame = relation.limit(limit + 1).pl()
    table = Table(show_edge=False, header_style="bold")
    for name, dtype in frame.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.head(limit).iter_rows():
        table.add_row(
            *("" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in row)
        )
    Console(highlight=False).print(table)
    if frame.height > limit:
        typer.echo(f"(first {limit} rows; use --limit or --format csv for more)")


def main() -> None:
    """Entry point: library errors become one line and their exit code."""
    try:
        app(standalone_mode=False)
    except CustsegError as error:
        _State.reporter.error(str(error))
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _State.reporter.error("interrupted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as usage:  # unknown option, missing argument, ...
        usage.show()
        sys.exit(getattr(usage, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except Exception as error:  # a bug: keep the traceback for the report
        import traceback

        traceback.print_exc()
        _State.reporter.error(f"internal error: {type(error).__name__}: {error}")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
