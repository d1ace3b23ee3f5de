"""Out-of-time evaluation of next-best-product lists against what customers actually took up.

For a past as-of date T whose horizon has passed: the stages up to next_best_products are
replayed for T into a scratch warehouse, reading today's extracts but only rows dated up to T
(so the lists are what the pipeline would have said on T). Acquisitions are the products a
customer held on the last balance date by T + horizon but not on T. A popularity baseline
recommends, to each customer, the products most acquired in the horizon before T that he does
not hold and may buy (the same suitability rules). Figures, for both:
    hit_rate_at_k   share of customers with an acquisition who had one in their top k
    precision_at_k  share of recommendations that were acquired
    coverage        share of customers with at least one recommendation
The result is printed by `custseg evaluate nbp` and saved as JSON under
<warehouse>/evaluations/.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb

from pipeline.config import Config
from pipeline.errors import UsageError
from pipeline.ingest import register_staged_views
from pipeline.log import Reporter
from pipeline.registry import STAGES_BY_NAME
from pipeline.runner import run_stages
from pipeline.warehouse import partition_path
from transforms.snapshots import holdings_on

REPLAYED = (
    "customer_features",
    "aum_tiers",
    "risk_profiles",
    "product_rules",
    "next_best_products",
)


def latest_staged_on(staging: Path) -> date | None:
    days = [
        date.fromisoformat(p.parent.name.removeprefix("extract_on="))
        for p in staging.glob("stg_*/extract_on=*/data.parquet")
    ]
    return max(days) if days else None


def known_today(config: Config) -> date:
    """The latest staged extract date: what a replay of a past date may read."""
    known_on = latest_staged_on(config.paths.staging)
    if known_on is None:
        raise UsageError("nothing is staged yet: run `custseg run --as-of latest` first")
    return known_on


def replay_config(config: Config, scratch: Path) -> Config:
    """The config for replaying past dates into a scratch warehouse and model folder; replays
    publish nothing, so their tables are not gated."""
    paths = config.paths.model_copy(
        update={"warehouse": scratch / "warehouse", "models": scratch / "models"}
    )
    validation = config.validation.model_copy(update={"enabled": False})
    return config.model_copy(update={"paths": paths, "validation": validation})


def evaluate_nbp(config: Config, as_of: date, reporter: Reporter) -> dict:
    params = config.next_best_products
    known_on = known_today(config)
    horizon_end = as_of + timedelta(days=params.horizon_days)
    if horizon_end > known_on:
        raise UsageError(
            f"--as-of {as_of}: its {params.horizon_days}-day horizon ends {horizon_end}, after "
            f"the latest staged data ({known_on}); pick a date on or before "
            f"{known_on - timedelta(days=params.horizon_days)}"
        )
    scratch = config.paths.temp / f"evaluate-nbp-{as_of}"
    shutil.rmtree(scratch, ignore_errors=True)
    replay = replay_config(config, scratch)
    try:
        reporter.info(f"replaying {', '.join(REPLAYED)} for {as_of} with data known on {known_on}")
        run_stages(
            replay, as_of, [STAGES_BY_NAME[s] for s in REPLAYED], reporter, known_on=known_on
        )
        figures = score_lists(replay, as_of, known_on, params.horizon_days, params.top_k)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures.update(
        as_of=as_of.isoformat(),
        known_on=known_on.isoformat(),
        top_k=params.top_k,
        horizon_days=params.horizon_days,
    )
    target = config.paths.warehouse / "evaluations" / f"nbp_{as_of}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2) + "\n")
    figures["saved_to"] = str(target)
    return figures


def score_lists(config: Config, as_of: date, known_on: date, horizon: int, top_k: int) -> dict:
    con = duckdb.connect()
    register_staged_views(con, config.paths.staging, known_on)
    for table in ("customer_features", "next_best_products", "risk_profiles", "aum_tiers"):
        path = partition_path(config.paths.warehouse, table, as_of)
        source = f"read_parquet('{path}')" if path.exists() else "(select null as customer_id)"
        con.execute(f"create view {table} as select * from {source}")
    tiers = config.aum_tiers
    tier_order = [t.code for t in tiers.tiers] + [tiers.private_banking.code]
    rows = con.execute(
        f"""
        with held_then as ({holdings_on("stg_balances", "$as_of")}),
        held_later as ({holdings_on("stg_balances", "$horizon_end")}),
        held_before as ({holdings_on("stg_balances", "$as_of - $horizon")}),
        population as (select customer_id from customer_features),
        acquired as (
            select l.customer_id, l.product_id from held_later l
            join population using (customer_id)
            anti join held_then t using (customer_id, product_id)
        ),
        popular as (  -- acquisitions in the horizon before as_of, most first
            select t.product_id, count(*) as acquisitions
            from held_then t anti join held_before b using (customer_id, product_id)
            where exists (select 1 from held_before)
            group by all
        ),
        baseline_candidates as (
            select c.customer_id, p.product_id, p.acquisitions
            from population c cross join popular p
            join stg_products s using (product_id)
            left join aum_tiers a using (customer_id)
            left join risk_profiles r using (customer_id)
            anti join held_then h on h.customer_id = c.customer_id and h.product_id = p.product_id
            where (nullif(s.min_tier, '') is null or coalesce(
                       list_position($tier_order, a.service_tier)
                       >= list_position($tier_order, s.min_tier), false))
              and (s.risk_level <= $risk_free
                   or (r.questionnaire_status = 'valid'
                       and s.risk_level <= r.max_product_risk_level))
        ),
        baseline as (
            select customer_id, product_id from (
                select *, row_number() over (partition by customer_id
                    order by acquisitions desc, product_id) as rank
                from baseline_candidates)
            where rank <= $top_k
        ),
        lists as (
            select 'blend' as method, customer_id, product_id from next_best_products
            union all
            select 'popularity', customer_id, product_id from baseline
        ),
        methods as (select unnest(['blend', 'popularity']) as method)
        select m.method,
               (select count(*) from population) as customers,
               (select count(distinct customer_id) from acquired) as acquirers,
               (select count(*) from acquired) as acquisitions,
               (select count(*) from lists l where l.method = m.method) as recommendations,
               (select count(distinct l.customer_id) from lists l where l.method = m.method)
                   as customers_recommended,
               (select count(*) from lists l join acquired a using (customer_id, product_id)
                where l.method = m.method) as hits,
               (select count(distinct l.customer_id) from lists l
                join acquired a using (customer_id, product_id) where l.method = m.method)
                   as acquirers_hit
        from methods m order by m.method
        """,
        {
            "as_of": as_of,
            "horizon_end": as_of + timedelta(days=horizon),
            "horizon": horizon,
            "tier_order": tier_order,
            "risk_free": config.next_best_products.risk_free_level,
            "top_k": top_k,
        },
    ).fetchall()
    result: dict = {}
    for method, customers, acquirers, acquisitions, recommended, reached, hits, hit in rows:
        result[method] = {
            "customers": customers,
            "acquirers": acquirers,
            "acquisitions": acquisitions,
            "recommendations": recommended,
            "hits": hits,
            "hit_rate_at_k": hit / acquirers if acquirers else None,
            "precision_at_k": hits / recommended if recommended else None,
            "coverage": reached / customers if customers else None,
        }
    return result
