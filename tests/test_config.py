from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import EXIT_USAGE, ConfigError
from tests.conftest import DEFAULT_CONFIG


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custseg.yaml"
    path.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return path


def test_default_config_loads_with_every_stage_block():
    config = load_config(DEFAULT_CONFIG, environ={})
    assert [t.code for t in config.aum_tiers.tiers] == ["mass", "affluent", "hnw"]
    assert config.aum_tiers.private_banking.min_aum_cny == 10_000_000
    assert config.customer_features.windows_days == [30, 90, 365]
    assert len(config.hash()) == 16


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
            "  window_days: 365", "  window_days: 365\n  windw_days: 30"
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(path) in str(caught.value)
    assert "rfm_scores.windw_days" in str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE


def test_environment_overrides_paths_and_values():
    config = load_config(
        DEFAULT_CONFIG,
        environ={"CUSTSEG__PATHS__WAREHOUSE": "/mnt/wh", "CUSTSEG__ENGINE__THREADS": "2"},
    )
    assert config.paths.warehouse == Path("/mnt/wh")
    assert config.engine.threads == 2


def test_bad_override_value_is_reported_with_its_key():
    with pytest.raises(ConfigError, match="engine.threads"):
        load_config(DEFAULT_CONFIG, environ={"CUSTSEG__ENGINE__THREADS": "many"})


def test_rfm_rules_must_name_every_score_combination(tmp_path):
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    lost_rule = next(line for line in text.splitlines(keepends=True) if "code: lost," in line)
    text = text.replace(lost_rule, "")
    path = tmp_path / "gap.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="R=1 F=1 M=1"):
        load_config(path, environ={})


def test_tiers_must_start_at_zero_and_rise(tmp_path):
    path = tmp_path / "tiers.yaml"
    path.write_text(
        DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
            "{code: mass,     name_zh: 普通客户,   min_aum_cny: 0}",
            "{code: mass,     name_zh: 普通客户,   min_aum_cny: 100}",
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="aum_tiers.tiers"):
        load_config(path, environ={})


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("paths: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken, environ={})


def test_no_secret_in_the_default_config():
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    assert "salt:" not in text.replace("salt_env:", "")
