"""The one YAML configuration, validated by pydantic before anything runs.

Every stage has a block. Unknown keys are rejected; errors name the key and the file.
Environment variables override any key: ``CUSTSEG__PATHS__WAREHOUSE=/mnt/wh`` sets
``paths.warehouse``. Secrets never live in the file: the pseudonymisation salt is read from the
variable named by ``privacy.salt_env`` at ingest time.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("configs/default.yaml")
CONFIG_ENV = "CUSTSEG_CONFIG"
OVERRIDE_PREFIX = "CUSTSEG__"


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Block):
    landing: Path = Path("data/landing")
    staging: Path = Path("data/staging")
    warehouse: Path = Path("data/warehouse")
    ground_truth: Path = Path("data/ground_truth")
    temp: Path = Path("data/tmp")


class Engine(Block):
    threads: int | None = Field(None, ge=1, description="DuckDB threads; null = all cores")
    memory_limit: str = Field("8GB", description="DuckDB memory limit; beyond it DuckDB spills")


class Privacy(Block):
    salt_env: str = "CUSTSEG_PSEUDONYMISATION_SALT"
    drop_columns: list[str] = ["name", "phone"]
    pseudonymise_columns: list[str] = ["national_id"]


class Label(Block):
    code: str
    name_zh: str


class GenerateParams(Block):
    customers: int = Field(20_000, ge=10)
    months: int = Field(24, ge=3, le=120)
    balance_history_months: int = Field(13, ge=2, le=120)
    end_on: date = date(2026, 11, 3)
    daily_increments: int = Field(3, ge=0, le=60)
    seed: int = 42
    mess_rate: float = Field(0.01, ge=0, le=0.2)
    file_format: Literal["csv", "parquet"] = "csv"
    gbk_sources: list[str] = ["customers"]
    chunk_customers: int = Field(100_000, ge=1_000)


class SourceOptions(Block):
    """How one source's extracts are read; the columns themselves are in transforms/sources.py."""

    file_format: Literal["auto", "csv", "parquet"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","
    date_format: str = "%Y-%m-%d"
    timestamp_format: str = "%Y-%m-%d %H:%M:%S"


def _default_sources() -> dict[str, SourceOptions]:
    return {
        "customers": SourceOptions(encoding="gbk"),
        "products": SourceOptions(),
        "balances": SourceOptions(),
        "transactions": SourceOptions(),
        "events": SourceOptions(),
        "questionnaires": SourceOptions(),
    }


class IngestParams(Block):
    sources: dict[str, SourceOptions] = Field(default_factory=_default_sources)
    reject_future_dated: bool = True

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: dict[str, SourceOptions]) -> dict[str, SourceOptions]:
        from transforms.sources import SOURCES

        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {sorted(SOURCES)}")
        return {name: sources.get(name, SourceOptions()) for name in SOURCES}


class CustomerFeaturesParams(Block):
    windows_days: list[int] = [30, 90, 365]

    @field_validator("windows_days")
    @classmethod
    def _three_windows(cls, windows: list[int]) -> list[int]:
        if sorted(windows) != windows or len(set(windows)) != len(windows) or windows[0] < 1:
            raise ValueError("windows_days must be distinct positive day counts in rising order")
        return windows


class RfmSegmentRule(Block):
    """First rule whose ranges hold names the segment; ranges are inclusive score bounds."""

    code: str
    name_zh: str
    recency: tuple[int, int]
    frequency: tuple[int, int]
    monetary: tuple[int, int] = (1, 5)


class RfmParams(Block):
    window_days: int = Field(365, ge=7)
    score_bins: int = Field(5, ge=2, le=10)
    segments: list[RfmSegmentRule]

    @model_validator(mode="after")
    def _every_score_combination_named(self) -> RfmParams:
        n = self.score_bins
        for r in range(1, n + 1):
            for f in range(1, n + 1):
                for m in range(1, n + 1):
                    if not any(
                        s.recency[0] <= r <= s.recency[1]
                        and s.frequency[0] <= f <= s.frequency[1]
                        and s.monetary[0] <= m <= s.monetary[1]
                        for s in self.segments
                    ):
                        raise ValueError(
                            f"rfm segments leave score R={r} F={f} M={m} unnamed; "
                            "every combination must match a rule"
                        )
        return self


class AumTier(Block):
    code: str
    name_zh: str
    min_aum_cny: float = Field(ge=0)


class AumTierParams(Block):
    tiers: list[AumTier]
    private_banking: AumTier

    @field_validator("tiers")
    @classmethod
    def _rising_from_zero(cls, tiers: list[AumTier]) -> list[AumTier]:
        bounds = [t.min_aum_cny for t in tiers]
        if not tiers or bounds[0] != 0 or sorted(set(bounds)) != bounds:
            raise ValueError("tiers must start at min_aum_cny 0 and rise strictly")
        return tiers


class Config(Block):
    paths: Paths = Paths()
    engine: Engine = Engine()
    privacy: Privacy = Privacy()
    generate: GenerateParams = GenerateParams()
    ingest: IngestParams = IngestParams()
    customer_features: CustomerFeaturesParams = CustomerFeaturesParams()
    rfm_scores: RfmParams
    aum_tiers: AumTierParams

    source_file: Path | None = Field(None, exclude=True)

    def hash(self) -> str:
        """Stable hash of the resolved configuration, recorded in every manifest."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def salt(self) -> str | None:
        return os.environ.get(self.privacy.salt_env) or None


def _apply_env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> list[str]:
    applied = []
    for name, value in sorted(environ.items()):
        if not name.startswith(OVERRIDE_PREFIX):
            continue
        keys = [k.lower() for k in name[len(OVERRIDE_PREFIX) :].split("__") if k]
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: '{key}' is not a block in the configuration")
        node[keys[-1]] = yaml.safe_load(value) if value else value
        applied.append(".".join(keys))
    return applied


def resolve_config_path(path: Path | None) -> Path:
    if path is not None:
        return path
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH))


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate; raise ConfigError with key and file."""
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of stage blocks")
    _apply_env_overrides(raw, dict(os.environ if environ is None else environ))
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    return config.model_copy(update={"source_file": path})
