"""The command line, driven as a scheduler would: subprocesses, exit codes, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.errors import EXIT_INPUT, EXIT_USAGE
from tests.conftest import REPO

COMMANDS = [
    "generate",
    "run",
    "stages",
    "config show",
    "sql",
    "validate",
    "evaluate nbp",
    "report",
    "backtest",
]


def custseg(*args, config=None, env=None, cwd=REPO):
    command = [sys.executable, "-m", "pipeline.cli", *args]
    if config is not None:
        command += ["--config", str(config)]
    environment = {**os.environ, "CUSTSEG_PSEUDONYMISATION_SALT": "test-salt", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment)


def _config_file(tmp_path, config) -> str:
    path = tmp_path / "custseg.yaml"
    data = config.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = custseg(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout


def test_stages_lists_the_dag():
    result = custseg("stages")
    assert result.returncode == 0
    for name in ("ingest", "customer_features", "rfm_scores", "aum_tiers"):
        assert f"\n{name}\n" in f"\n{result.stdout}"
    assert "grain    one row per customer_id and as_of" in result.stdout


def test_config_show_resolves_overrides_and_hides_the_salt():
    result = custseg("config", "show", env={"CUSTSEG__ENGINE__THREADS": "2"})
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["engine"]["threads"] == 2
    assert shown["privacy"]["salt"].startswith("set (from $CUSTSEG_PSEUDONYMISATION_SALT)")
    assert "test-salt" not in result.stdout


def test_usage_errors_exit_2_with_one_line():
    result = custseg("run", "--as-of", "2026-13-01")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip().count("\n") == 0 and "YYYY-MM-DD" in result.stderr
    result = custseg("run", "--as-of", "2026-11-03", "--only", "nope")
    assert result.returncode == EXIT_USAGE and "unknown stage 'nope'" in result.stderr
    result = custseg("run", "--as-of", "2026-11-03", "--config", "missing.yaml")
    assert result.returncode == EXIT_USAGE and "config file not found" in result.stderr


def test_input_errors_exit_3(tmp_path, small_bank):
    config, _, _ = small_bank
    empty = config.model_copy(
        update={
            "paths": config.paths.model_copy(
                update={
                    "landing": tmp_path / "landing",
                    "staging": tmp_path / "staging",
                    "warehouse": tmp_path / "warehouse",
                }
            )
        }
    )
    (tmp_path / "landing").mkdir()
    result = custseg("run", "--as-of", "2026-11-03", config=_config_file(tmp_path, empty))
    assert result.returncode == EXIT_INPUT, result.stderr
    assert "no extract dated on or before 2026-11-03" in result.stderr
    # the failed night still gets its report: the run summary names the error
    report = (tmp_path / "warehouse" / "reports" / "report_2026-11-03.html").read_text()
    assert "Run failed" in report and "no extract dated on or before" in report


def test_run_one_stage_with_json_logs_for_a_scheduler(tmp_path, small_bank):
    config, _, _ = small_bank
    result = custseg(
        "run",
        "--as-of",
        "latest",
        "--only",
        "aum_tiers",
        "--log-format",
        "json",
        config=_config_file(tmp_path, config),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    finished = [r for r in records if r["event"] == "stage_finished"]
    assert [(r["stage"], r["status"]) for r in finished] == [("aum_tiers", "ok")]
    events = [r["event"] for r in records]
    assert events[-2:] == ["run_finished", "report_written"]  # the report comes after the run
    assert records[-1]["path"].endswith(f"report_{config.generate.end_on}.html")


def test_sql_queries_the_published_tables(tmp_path, small_bank):
    config, _, _ = small_bank
    path = _config_file(tmp_path, config)
    result = custseg(
        "sql",
        "--format",
        "csv",
        "select aum_tier, count(*) as n from aum_tiers group by 1 order by 1",
        config=path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "aum_tier,n" and {line.split(",")[0] for line in lines[1:]} == {
        "affluent",
        "hnw",
        "mass",
    }
    bad = custseg("sql", "select nope", config=path)
    assert bad.returncode == EXIT_USAGE and "query failed" in bad.stderr
