"""The stage registry: the whole DAG at a glance.

Each stage declares what it reads (staged sources and upstream tables), what it writes, its
grain, the config block holding its parameters, and the transform that computes it. The
runner wires inputs to outputs from these declarations and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transforms.aum_tiers import aum_tiers
from transforms.aum_tiers import expectations as aum_tiers_expectations
from transforms.banking_values import banking_values
from transforms.banking_values import expectations as banking_values_expectations
from transforms.churn_scores import churn_scores
from transforms.churn_scores import expectations as churn_scores_expectations
from transforms.clusters import clusters
from transforms.clv_estimates import clv_estimates
from transforms.clv_estimates import expectations as clv_estimates_expectations
from transforms.customer_features import customer_features
from transforms.customer_features import expectations as customer_features_expectations
from transforms.feature_coverage import coverage_warnings, feature_coverage
from transforms.feature_coverage import expectations as feature_coverage_expectations
from transforms.life_stages import life_stages
from transforms.lifecycle_stages import lifecycle_stages
from transforms.model_fits import MODEL_FITS, MODEL_FITS_KEY
from transforms.next_best_products import expectations as next_best_products_expectations
from transforms.next_best_products import next_best_products
from transforms.product_rules import product_rules
from transforms.relationship_depth import relationship_depth
from transforms.rfm_scores import expectations as rfm_scores_expectations
from transforms.rfm_scores import rfm_scores
from transforms.risk_profiles import expectations as risk_profiles_expectations
from transforms.risk_profiles import risk_profiles
from transforms.rules import rule_expectations
from transforms.segment_migrations import segment_migrations
from transforms.segment_summaries import segment_summaries
from transforms.segments import expectations as segments_expectations
from transforms.segments import segments

PREVIOUS = "previous_"  # an input named previous_<table>: that table's latest earlier as-of


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    grain: str
    params_block: str | None
    output: str | None  # the warehouse table it publishes (None for ingest)
    # inputs a stage cannot run without (staged source names or upstream tables) ...
    requires: tuple[str, ...] = ()
    # ... and inputs it uses when present (its columns from them are null otherwise);
    # previous_<table> is the latest partition of <table> dated before the run's as-of
    uses: tuple[str, ...] = ()
    transform: Callable | None = None
    key: tuple[str, ...] = ("customer_id", "as_of")
    # (connection, computed table) -> warnings the run reports, e.g. coverage under minimum
    warnings: Callable | None = None
    # further tables the transform returns (as a dict with the main output), with their keys
    extra_outputs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # params -> the checks of the main output beyond its key (declared beside the transform)
    expectations: Callable | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.requires + self.uses


STAGES: tuple[Stage, ...] = (
    Stage(
        name="ingest",
        description="landing extracts -> typed, de-duplicated staging history, with rejects",
        grain="stg_<source>: one row per natural key; stg_rejects: one row per rejected row",
        params_block="ingest",
        output=None,
    ),
    Stage(
        name="customer_features",
        description="the 360-degree profile: activity, flows, holdings, behaviour, questionnaires",
        grain="one row per customer_id and as_of",
        params_block="customer_features",
        output="customer_features",
        requires=("stg_transactions",),
        uses=("stg_customers", "stg_balances", "stg_products", "stg_events", "stg_questionnaires"),
        transform=customer_features,
        expectations=customer_features_expectations,
    ),
    Stage(
        name="feature_coverage",
        description="share of customers with data per feature group; warns under the minimum",
        grain="one row per feature_group and as_of",
        params_block="customer_features",
        output="feature_coverage",
        requires=("customer_features",),
        transform=feature_coverage,
        expectations=feature_coverage_expectations,
        key=("feature_group", "as_of"),
        warnings=coverage_warnings,
    ),
    Stage(
        name="rfm_scores",
        description="recency / frequency / monetary quantile scores and named RFM segments",
        grain="one row per customer_id and as_of",
        params_block="rfm_scores",
        output="rfm_scores",
        requires=("stg_transactions", "customer_features"),
        transform=rfm_scores,
        expectations=rfm_scores_expectations,
    ),
    Stage(
        name="aum_tiers",
        description="value tier on average AUM with hysteresis, and the private-banking sub-tier",
        grain="one row per customer_id and as_of",
        params_block="aum_tiers",
        output="aum_tiers",
        requires=("customer_features", "stg_balances"),
        uses=("previous_aum_tiers",),
        transform=aum_tiers,
        expectations=aum_tiers_expectations,
    ),
    Stage(
        name="risk_profiles",
        description="stated risk class, behavioural risk, mismatch / latent-aggressive flags",
        grain="one row per customer_id and as_of",
        params_block="risk_profiles",
        output="risk_profiles",
        requires=("customer_features",),
        transform=risk_profiles,
        expectations=risk_profiles_expectations,
    ),
    Stage(
        name="lifecycle_stages",
        description="onboarding / growth / mature / decline / lapsed, by rules in config",
        grain="one row per customer_id and as_of",
        params_block="lifecycle_stages",
        output="lifecycle_stages",
        requires=("customer_features",),
        transform=lifecycle_stages,
        expectations=rule_expectations("lifecycle_stage"),
    ),
    Stage(
        name="life_stages",
        description="young single / family / pre-retirement / retired, and occupation",
        grain="one row per customer_id and as_of",
        params_block="life_stages",
        output="life_stages",
        requires=("customer_features",),
        transform=life_stages,
        expectations=rule_expectations("life_stage"),
    ),
    Stage(
        name="relationship_depth",
        description="basic / multi-product / ecosystem from product families and payroll links",
        grain="one row per customer_id and as_of",
        params_block="relationship_depth",
        output="relationship_depth",
        requires=("customer_features",),
        transform=relationship_depth,
        expectations=rule_expectations("relationship_depth"),
    ),
    Stage(
        name="clusters",
        description="K-means segments with ids stable across runs, a profile per cluster",
        grain="clusters: customer_id, as_of; cluster_profiles: cluster_id, as_of",
        params_block="clusters",
        output="clusters",
        requires=("customer_features",),
        uses=("previous_cluster_profiles",),
        transform=clusters,
        extra_outputs=(("cluster_profiles", ("cluster_id", "as_of")), (MODEL_FITS, MODEL_FITS_KEY)),
    ),
    Stage(
        name="clv_estimates",
        description="BG/NBD + Gamma-Gamma: expected transactions, P(alive), lifetime value",
        grain="one row per customer_id and as_of",
        params_block="clv_estimates",
        output="clv_estimates",
        requires=("stg_transactions", "customer_features"),
        transform=clv_estimates,
        expectations=clv_estimates_expectations,
        extra_outputs=((MODEL_FITS, MODEL_FITS_KEY),),
    ),
    Stage(
        name="churn_scores",
        description="calibrated churn probability, risk band and reason codes (retrained monthly)",
        grain="one row per customer_id and as_of",
        params_block="churn_scores",
        output="churn_scores",
        requires=("customer_features", "stg_transactions"),
        uses=("stg_customers", "stg_balances", "stg_products", "stg_events", "stg_questionnaires"),
        transform=churn_scores,
        expectations=churn_scores_expectations,
        extra_outputs=((MODEL_FITS, MODEL_FITS_KEY),),
    ),
    Stage(
        name="banking_values",
        description="annual margin from balances x expected relationship from the churn model",
        grain="one row per customer_id and as_of",
        params_block="banking_values",
        output="banking_values",
        requires=("customer_features", "churn_scores"),
        transform=banking_values,
        expectations=banking_values_expectations,
    ),
    Stage(
        name="product_rules",
        description="exact association rules between held products: support, confidence, lift",
        grain="one row per as_of, antecedent_key and consequent",
        params_block="product_rules",
        output="product_rules",
        requires=("customer_features", "stg_balances", "stg_products"),
        transform=product_rules,
        key=("as_of", "antecedent_key", "consequent"),
    ),
    Stage(
        name="next_best_products",
        description="top-k suitable products per customer: rules, propensity, demand signals",
        grain="one row per customer_id, as_of and rank",
        params_block="next_best_products",
        output="next_best_products",
        requires=(
            "customer_features",
            "risk_profiles",
            "product_rules",
            "stg_transactions",
            "stg_balances",
            "stg_products",
        ),
        uses=("aum_tiers", "stg_customers", "stg_events", "stg_questionnaires"),
        transform=next_best_products,
        expectations=next_best_products_expectations,
        key=("customer_id", "as_of", "rank"),
    ),
    Stage(
        name="segments",
        description="the wide table downstream systems load: every dimension, code, service",
        grain="one row per customer_id and as_of",
        params_block="segments",
        output="segments",
        requires=(
            "customer_features",
            "rfm_scores",
            "risk_profiles",
            "lifecycle_stages",
            "life_stages",
            "relationship_depth",
        ),
        uses=(
            "aum_tiers",
            "clusters",
            "clv_estimates",
            "churn_scores",
            "banking_values",
            "previous_segments",
        ),
        transform=segments,
        expectations=segments_expectations,
    ),
    Stage(
        name="segment_migrations",
        description="from/to counts per dimension against the previous as-of in the warehouse",
        grain="one row per as_of, dimension, from_value and to_value",
        params_block="segments",
        output="segment_migrations",
        requires=("segments",),
        uses=("previous_segments",),
        transform=segment_migrations,
        key=("as_of", "dimension", "from_value", "to_value"),
    ),
    Stage(
        name="segment_summaries",
        description="size, AUM and mean features per segment value, per dimension",
        grain="one row per as_of, dimension and segment_value",
        params_block="segments",
        output="segment_summaries",
        requires=("segments", "customer_features"),
        transform=segment_summaries,
        key=("as_of", "dimension", "segment_value"),
    ),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
STAGES_BY_NAME = {s.name: s for s in STAGES}
TABLES = tuple(
    table
    for s in STAGES
    if s.output
    for table in (s.output, *(t for t, _ in s.extra_outputs))
    if table != MODEL_FITS
)


def upstream(stage: Stage) -> list[str]:
    """The stages whose outputs this stage reads (ingest for every staged source)."""
    names = []
    for item in stage.inputs:
        if item.startswith(PREVIOUS):
            continue  # an earlier run's output, not this run's
        producer = "ingest" if item.startswith("stg_") else item
        if producer not in names:
            names.append(producer)
    return names


def select_stages(
    only: list[str] | None = None, start: str | None = None, stop: str | None = None
) -> list[Stage]:
    """Stages to run, in DAG order: `only` these, or the slice `start`..`stop` (inclusive)."""
    for name in [*(only or []), start, stop]:
        if name is not None and name not in STAGES_BY_NAME:
            raise KeyError(name)
    if only:
        return [s for s in STAGES if s.name in only]
    names = list(STAGE_NAMES)
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    return list(STAGES[first : last + 1])
