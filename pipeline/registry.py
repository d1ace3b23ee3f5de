"""The stage registry: the whole DAG at a glance.

Each stage declares what it reads (staged sources and upstream tables), what it writes, its
grain, the config block holding its parameters, and the transform that computes it. The
runner wires inputs to outputs from these declarations and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transforms.aum_tiers import aum_tiers
from transforms.customer_features import customer_features
from transforms.rfm_scores import rfm_scores


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    grain: str
    params_block: str | None
    output: str | None  # the warehouse table it publishes (None for ingest)
    # inputs a stage cannot run without (staged source names or upstream tables) ...
    requires: tuple[str, ...] = ()
    # ... and inputs it uses when present (its columns from them are null otherwise)
    uses: tuple[str, ...] = ()
    transform: Callable | None = None
    key: tuple[str, ...] = ("customer_id", "as_of")

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
        description="the per-customer profile: activity windows, recency, AUM, tenure, age",
        grain="one row per customer_id and as_of",
        params_block="customer_features",
        output="customer_features",
        requires=("stg_transactions",),
        uses=("stg_customers", "stg_balances", "stg_products"),
        transform=customer_features,
    ),
    Stage(
        name="rfm_scores",
        description="recency / frequency / monetary quantile scores and named RFM segments",
        grain="one row per customer_id and as_of",
        params_block="rfm_scores",
        output="rfm_scores",
        requires=("stg_transactions", "customer_features"),
        transform=rfm_scores,
    ),
    Stage(
        name="aum_tiers",
        description="value tier (mass / affluent / HNW) and private-banking flag from AUM",
        grain="one row per customer_id and as_of",
        params_block="aum_tiers",
        output="aum_tiers",
        requires=("customer_features", "stg_balances"),
        transform=aum_tiers,
    ),
)

STAGE_NAMES = tuple(s.name for s in STAGES)
STAGES_BY_NAME = {s.name: s for s in STAGES}
TABLES = tuple(s.output for s in STAGES if s.output)


def upstream(stage: Stage) -> list[str]:
    """The stages whose outputs this stage reads (ingest for every staged source)."""
    names = []
    for item in stage.inputs:
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
