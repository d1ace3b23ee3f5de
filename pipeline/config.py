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


ColumnType = Literal["varchar", "date", "timestamp", "integer", "decimal", "boolean"]
RiskLevel = Literal["R1", "R2", "R3", "R4", "R5"]


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Block):
    landing: Path = Path("data/landing")
    staging: Path = Path("data/staging")
    warehouse: Path = Path("data/warehouse")
    ground_truth: Path = Path("data/ground_truth")
    temp: Path = Path("data/tmp")
    models: Path = Path("data/models")


class Engine(Block):
    threads: int | None = Field(None, ge=1, description="DuckDB threads; null = all cores")
    memory_limit: str = Field("4GB", description="DuckDB memory limit; beyond it DuckDB spills")
    parallel_stages: int = Field(
        2,
        ge=1,
        description="stages run side by side once their inputs are ready (1 = one at a time)",
    )


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
    workers: int = Field(2, ge=1, description="processes simulating chunks side by side")


class SourceOptions(Block):
    """How one source's extracts are read; the columns themselves are in transforms/sources.py."""

    file_format: Literal["auto", "csv", "parquet"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","
    date_format: str = "%Y-%m-%d"
    timestamp_format: str = "%Y-%m-%d %H:%M:%S"
    # the bank's own columns beyond the contract, kept and typed at ingest (a malformed value is
    # rejected like any other); list them in customer_features.extra_attributes to use them
    extra_columns: dict[str, ColumnType] = {}


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

    @model_validator(mode="after")
    def _extra_columns_are_new(self) -> IngestParams:
        from transforms.sources import SOURCES

        for name, options in self.sources.items():
            SOURCES[name].with_extra(options.extra_columns)  # raises on a clash
        return self

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: dict[str, SourceOptions]) -> dict[str, SourceOptions]:
        from transforms.sources import SOURCES

        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {sorted(SOURCES)}")
        return {name: sources.get(name, SourceOptions()) for name in SOURCES}


def only_known(values: list[str], vocabulary, what: str) -> list[str]:
    """`values` unchanged when each is in `vocabulary`; else a ValueError naming the strays."""
    unknown = sorted(set(values) - set(vocabulary))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(vocabulary)}")
    return values


def _categories(categories: list[str]) -> list[str]:
    from transforms.sources import CATEGORIES

    return only_known(categories, CATEGORIES, "categories")


def _rising_windows(windows: list[int]) -> list[int]:
    if sorted(windows) != windows or len(set(windows)) != len(windows) or windows[0] < 1:
        raise ValueError("windows must be distinct positive day counts in rising order")
    return windows


class CoverageParams(Block):
    min_share: float = Field(0.9, ge=0, le=1, description="warn when a group covers less")
    min_share_by_group: dict[str, float] = {}


class CustomerFeaturesParams(Block):
    windows_days: list[int] = [30, 90, 365]
    event_windows_days: list[int] = [30, 90]
    trend_window_days: int = Field(90, ge=7)
    aum_average_days: int = Field(90, ge=1)
    digital_channels: list[str] = ["mobile", "online"]
    salary_categories: list[str] = ["salary"]
    salary_min_months: int = Field(2, ge=1, le=3)
    business_categories: list[str] = ["business_income"]
    business_product_types: list[str] = ["business_loan"]
    risk_asset_min_level: RiskLevel = "R3"
    questionnaire_valid_months: int = Field(12, ge=1)
    extra_attributes: list[str] = []
    coverage: CoverageParams = CoverageParams()

    @field_validator("windows_days", "event_windows_days")
    @classmethod
    def _windows(cls, windows: list[int]) -> list[int]:
        return _rising_windows(windows)

    @field_validator("digital_channels")
    @classmethod
    def _known_channels(cls, channels: list[str]) -> list[str]:
        from transforms.sources import CHANNELS

        return only_known(channels, CHANNELS, "channel(s)")

    @field_validator("salary_categories", "business_categories")
    @classmethod
    def _known_categories(cls, categories: list[str]) -> list[str]:
        return _categories(categories)


class Condition(Block):
    """Comparisons on one feature; all given must hold. A null feature satisfies none of them
    except `is_null: true`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    eq: float | str | bool | None = None
    in_: list[str] | None = Field(None, alias="in")
    is_null: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Condition:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("a condition needs at least one of lt, le, gt, ge, eq, in, is_null")
        return self


Conditions = dict[str, Condition]


class ClassRule(Block):
    """One class of a rule-based dimension. `when` is a mapping feature -> condition (all must
    hold) or a list of such mappings (any may hold); the last rule has none and catches the
    rest."""

    code: str
    name_zh: str
    when: Conditions | list[Conditions] = []

    @property
    def alternatives(self) -> list[Conditions]:
        return [self.when] if isinstance(self.when, dict) else list(self.when)


class RuleDimensionParams(Block):
    rules: list[ClassRule]

    @field_validator("rules")
    @classmethod
    def _ends_with_catch_all(cls, rules: list[ClassRule]) -> list[ClassRule]:
        if not rules or rules[-1].alternatives not in ([], [{}]):
            raise ValueError("the last rule must have no `when`: it catches every other customer")
        codes = [r.code for r in rules]
        if len(set(codes)) != len(codes):
            raise ValueError(f"rule codes repeat: {codes}")
        return rules


class RiskClass(Block):
    code: str
    name_zh: str
    min_score: float = Field(ge=0, le=100)
    max_product_risk: RiskLevel


class LatentAggressive(Block):
    """A customer who states a cautious class but behaves like a risk taker."""

    max_stated_class: str = "steady"
    min_risk_asset_share: float = Field(0.3, ge=0, le=1)
    min_risk_purchases_90d_cny: float = Field(10_000, ge=0)


class RiskProfileParams(Block):
    classes: list[RiskClass]
    material_holding_share: float = Field(0.05, ge=0, lt=1)
    latent_aggressive: LatentAggressive = LatentAggressive()

    @model_validator(mode="after")
    def _bands(self) -> RiskProfileParams:
        bounds = [c.min_score for c in self.classes]
        if not bounds or bounds[0] != 0 or sorted(set(bounds)) != bounds:
            raise ValueError("classes must start at min_score 0 and rise strictly")
        levels = [c.max_product_risk for c in self.classes]
        if sorted(levels) != levels:
            raise ValueError("max_product_risk must not fall as the class rises")
        if self.latent_aggressive.max_stated_class not in [c.code for c in self.classes]:
            raise ValueError("latent_aggressive.max_stated_class must be one of the class codes")
        return self


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
    hysteresis_band: float = Field(
        0.1, ge=0, lt=1, description="share of a boundary a customer must clear to change tier"
    )

    @field_validator("tiers")
    @classmethod
    def _rising_from_zero(cls, tiers: list[AumTier]) -> list[AumTier]:
        bounds = [t.min_aum_cny for t in tiers]
        if not tiers or bounds[0] != 0 or sorted(set(bounds)) != bounds:
            raise ValueError("tiers must start at min_aum_cny 0 and rise strictly")
        return tiers


class ServiceTreatment(Block):
    coverage_model: Literal["digital_self_service", "relationship_manager", "private_banker"]
    response_sla_hours: float = Field(gt=0)
    value_added_services: int = Field(ge=0)


DIMENSION_COLUMNS = (
    "aum_tier",
    "service_tier",
    "stated_risk_class",
    "behavioural_risk_class",
    "lifecycle_stage",
    "life_stage",
    "occupation",
    "relationship_depth",
    "rfm_segment",
    "cluster_id",
    "churn_risk_band",
    "segment_code",
)


class SegmentsParams(Block):
    code_parts: list[str] = ["aum_tier", "stated_risk_class", "life_stage"]
    separator: str = "-"
    short_codes: dict[str, str] = {}
    service: dict[str, ServiceTreatment]
    migration_dimensions: list[str] = [
        "service_tier",
        "stated_risk_class",
        "lifecycle_stage",
        "life_stage",
        "relationship_depth",
        "rfm_segment",
    ]
    summary_features: list[str] = [
        "age_years",
        "tenure_days",
        "txn_count_90d",
        "txn_amount_90d_cny",
        "digital_share_90d",
        "products_held",
    ]

    @field_validator("code_parts", "migration_dimensions")
    @classmethod
    def _known_dimensions(cls, names: list[str]) -> list[str]:
        return only_known(names, DIMENSION_COLUMNS, "dimension(s)")


class ClusterParams(Block):
    features: list[str]
    log_features: list[str] = []
    k: int | None = Field(8, ge=2, le=50)
    k_range: tuple[int, int] = (4, 10)
    seed: int = 42
    fit_sample_size: int = Field(200_000, ge=100)
    silhouette_sample_size: int = Field(10_000, ge=100)
    bootstrap_rounds: int = Field(5, ge=0, le=50)
    max_match_distance: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ClusterParams:
        stray = sorted(set(self.log_features) - set(self.features))
        if stray:
            raise ValueError(f"log_features {stray} are not in features")
        if not 2 <= self.k_range[0] <= self.k_range[1]:
            raise ValueError("k_range must be [low, high] with 2 <= low <= high")
        return self


class ClvParams(Block):
    time_unit: Literal["days", "weeks"] = "weeks"
    calibration_days: int = Field(730, ge=60, description="history the models learn from")
    horizon_days: int = Field(365, ge=1, description="expected transactions and CLV over this")
    holdout_days: int = Field(90, ge=7, description="refit this far back to test the forecast")
    retrain_every_days: int = Field(30, ge=1, description="runs in between reuse the fits")
    passive_categories: list[str] = ["salary", "pension", "interest", "fee"]
    min_repeat_customers: int = Field(30, ge=5)

    @field_validator("passive_categories")
    @classmethod
    def _known_categories(cls, categories: list[str]) -> list[str]:
        return _categories(categories)


class RiskBand(Block):
    code: str
    min_probability: float = Field(ge=0, le=1)


class GradientBoosting(Block):
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_iter: int = Field(300, ge=10)
    max_leaf_nodes: int = Field(31, ge=2)
    min_samples_leaf: int = Field(40, ge=1)
    l2_regularization: float = Field(1.0, ge=0)


class ChurnParams(Block):
    horizon_days: int = Field(90, ge=7)
    aum_drop_share: float = Field(0.7, gt=0, le=1)
    passive_categories: list[str] = ["salary", "pension", "interest", "fee"]
    training_snapshots: int = Field(8, ge=2, le=60)
    test_snapshots: int = Field(1, ge=1)
    retrain_every_days: int = Field(30, ge=1)
    training_customers: int | None = Field(
        200_000, ge=100, description="seeded sample whose features are recomputed per snapshot"
    )
    max_training_rows: int = Field(1_000_000, ge=1_000)
    features: list[str]
    risk_bands: list[RiskBand]
    reason_codes_for: list[str] = ["high", "medium"]
    seed: int = 42
    model: GradientBoosting = GradientBoosting()

    @field_validator("passive_categories")
    @classmethod
    def _known_categories(cls, categories: list[str]) -> list[str]:
        return _categories(categories)

    @model_validator(mode="after")
    def _consistent(self) -> ChurnParams:
        if self.test_snapshots + 2 > self.training_snapshots:
            raise ValueError(
                "training_snapshots must hold the test_snapshots, one calibration snapshot and "
                "at least one to fit on"
            )
        cuts = [b.min_probability for b in self.risk_bands]
        if not cuts or cuts[-1] != 0 or sorted(cuts, reverse=True) != cuts:
            raise ValueError("risk_bands must fall from the highest cut-off to min_probability 0")
        unknown = sorted(set(self.reason_codes_for) - {b.code for b in self.risk_bands})
        if unknown:
            raise ValueError(f"reason_codes_for {unknown} are not risk band codes")
        return self


class BankingValueParams(Block):
    # annual margin the bank earns per CNY of balance, by product family
    margin_by_family: dict[str, float] = {
        "deposit": 0.015,
        "wealth": 0.008,
        "fund": 0.012,
        "insurance": 0.02,
        "loan": 0.025,
        "card": 0.04,
    }
    horizon_years: int = Field(10, ge=1, le=50)
    discount_rate: float = Field(0.08, ge=0, lt=1)

    @field_validator("margin_by_family")
    @classmethod
    def _every_family(cls, margins: dict[str, float]) -> dict[str, float]:
        from transforms.sources import PRODUCT_FAMILIES

        if set(margins) != set(PRODUCT_FAMILIES):
            raise ValueError(f"margin_by_family needs exactly the families {PRODUCT_FAMILIES}")
        return margins


class ProductRulesParams(Block):
    min_support: float = Field(0.01, gt=0, le=1)
    min_confidence: float = Field(0.1, gt=0, le=1)
    max_length: int | None = Field(None, ge=2, description="items per rule; null = no limit")


class DemandSignal(Block):
    """A behaviour rule suggesting a product; the reason may name features as {feature}."""

    product: str
    reason: str
    score: float = Field(1.0, gt=0, le=1)
    when: Conditions | list[Conditions]

    @property
    def alternatives(self) -> list[Conditions]:
        return [self.when] if isinstance(self.when, dict) else list(self.when)


class BlendWeights(Block):
    rules: float = Field(1.0, ge=0)
    propensity: float = Field(1.0, ge=0)
    signals: float = Field(1.0, ge=0)


class PropensityParams(Block):
    features: list[str]
    training_snapshots: int = Field(4, ge=2, le=36)
    min_acquisitions: int = Field(20, ge=1, description="fewer in training: no model")
    retrain_every_days: int = Field(30, ge=1)
    training_customers: int | None = Field(
        200_000, ge=100, description="seeded sample whose features are recomputed per snapshot"
    )
    max_training_rows: int = Field(1_000_000, ge=1_000)
    seed: int = 42
    model: GradientBoosting = GradientBoosting()


class NextBestProductParams(Block):
    top_k: int = Field(3, ge=1, le=20)
    min_score: float = Field(0.001, ge=0)
    weights: BlendWeights = BlendWeights()
    risk_free_level: RiskLevel = "R1"
    horizon_days: int = Field(90, ge=7)
    signals: list[DemandSignal] = []
    propensity: PropensityParams


class ValidationParams(Block):
    enabled: bool = Field(True, description="run the expectation suites before publishing")
    # distribution checks: each value's share of these columns may move at most
    # max_share_change (absolute) from the previous as-of; a warning, not a stop
    stable_shares: dict[str, list[str]] = {}
    max_share_change: float = Field(0.05, gt=0, le=1)


class Config(Block):
    paths: Paths = Paths()
    engine: Engine = Engine()
    privacy: Privacy = Privacy()
    generate: GenerateParams = GenerateParams()
    ingest: IngestParams = IngestParams()
    customer_features: CustomerFeaturesParams = CustomerFeaturesParams()
    rfm_scores: RfmParams
    aum_tiers: AumTierParams
    risk_profiles: RiskProfileParams
    lifecycle_stages: RuleDimensionParams
    life_stages: RuleDimensionParams
    relationship_depth: RuleDimensionParams
    segments: SegmentsParams
    validation: ValidationParams = ValidationParams()
    clusters: ClusterParams
    clv_estimates: ClvParams = ClvParams()
    churn_scores: ChurnParams
    banking_values: BankingValueParams = BankingValueParams()
    product_rules: ProductRulesParams = ProductRulesParams()
    next_best_products: NextBestProductParams

    source_file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _blocks_agree(self) -> Config:
        from transforms.sources import SOURCES

        customers = {c.name for c in SOURCES["customers"].columns} - set(
            self.privacy.drop_columns + self.privacy.pseudonymise_columns
        )
        customers |= set(self.ingest.sources["customers"].extra_columns)
        unknown = sorted(set(self.customer_features.extra_attributes) - customers)
        if unknown:
            raise ValueError(
                f"customer_features.extra_attributes {unknown} are not customers columns; "
                "declare a bank's own column in ingest.sources.customers.extra_columns"
            )
        tiers = [t.code for t in self.aum_tiers.tiers] + [self.aum_tiers.private_banking.code]
        missing = [t for t in tiers if t not in self.segments.service]
        if missing or set(self.segments.service) - set(tiers):
            raise ValueError(
                f"segments.service needs exactly one entry per service tier {tiers}"
                f"{f'; missing {missing}' if missing else ''}"
            )
        return self

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
