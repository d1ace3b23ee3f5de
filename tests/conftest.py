"""Shared test helpers: a config pointed at a temporary folder, hand-written extracts, and one
small generated bank per session (generated and run once, then reused read-only)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.config import Config, Paths, load_config
from pipeline.log import Reporter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
SMALL_BANK_CUSTOMERS = 600


def config_for(root: Path, **blocks) -> Config:
    """The default config with every path under `root` (and any block replaced)."""
    config = load_config(DEFAULT_CONFIG, environ={})
    paths = Paths(
        landing=root / "landing",
        staging=root / "staging",
        warehouse=root / "warehouse",
        ground_truth=root / "ground_truth",
        temp=root / "tmp",
        models=root / "models",
    )
    return config.model_copy(update={"paths": paths, **blocks})


def small_generate(config: Config, customers: int = SMALL_BANK_CUSTOMERS, **params) -> Config:
    generate = config.generate.model_copy(
        update={"customers": customers, "chunk_customers": 1_000, **params}
    )
    return config.model_copy(update={"generate": generate})


def write_extract(landing: Path, source: str, day: date, text: str, encoding="utf-8") -> Path:
    path = landing / source / f"{source}_{day:%Y%m%d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def quiet() -> Reporter:
    return Reporter("human", quiet=True)


@pytest.fixture(autouse=True)
def _fixed_salt(monkeypatch):
    monkeypatch.setenv("CUSTSEG_PSEUDONYMISATION_SALT", "test-salt")


@pytest.fixture(scope="session")
def small_bank(tmp_path_factory):
    """A generated bank of 600 customers, run once for its latest as-of date."""
    from pipeline.generate import generate_bank
    from pipeline.registry import STAGES
    from pipeline.runner import run_stages

    root = tmp_path_factory.mktemp("small_bank")
    config = small_generate(config_for(root))
    mp = pytest.MonkeyPatch()
    mp.setenv("CUSTSEG_PSEUDONYMISATION_SALT", "test-salt")
    result = generate_bank(config)
    manifest = run_stages(config, config.generate.end_on, list(STAGES), quiet())
    mp.undo()
    return config, result, manifest


@pytest.fixture
def published_copy(tmp_path, small_bank):
    """The sample bank with its warehouse copied aside, to break tables in or to write
    evaluations and backtests to: (the bank's config, the copy's config)."""
    import shutil

    bank, _, _ = small_bank
    paths = bank.paths.model_copy(
        update={"warehouse": tmp_path / "warehouse", "temp": tmp_path / "tmp"}
    )
    shutil.copytree(bank.paths.warehouse, paths.warehouse)
    return bank, bank.model_copy(update={"paths": paths})
