"""next_best_products: a short ranked list of suitable products per customer, with reasons.

Grain: one row per customer_id, as_of and rank (1..top_k; fewer when fewer pass).
    product_id, product_name, score        the blended score (below)
    sources                                which of rules / propensity / signals proposed it
    reason_text                            what a relationship manager reads
    suitability_check                      the checks it passed, e.g.
                                           "risk R2 <= R3 (balanced); tier affluent >= any"
    rule_score                             the product's base acquisition rate (from the
                                           propensity training data) x rule_lift, at most 1:
                                           a rule on the scale of a probability
    rule_lift, rule_confidence, rule_antecedent   the product_rules rule with the highest lift
                                           whose left side the customer holds and whose right
                                           side he does not (ties: the shorter left side,
                                           then the first antecedent_key)
    propensity                             the product's classifier (acquisition within
                                           horizon_days), for products with enough history;
                                           scored only for customers not holding the product
                                           (so rules and signals alone propose held products,
                                           and only those count as already_held exclusions)
    signal_score                           the strongest demand signal from config

score = weights.rules x rule_score + weights.propensity x propensity + weights.signals x
signal_score (a missing source counts 0). Candidates scoring under min_score are dropped.

Suitability, in this order (the first failing check is the exclusion counted in the run
manifest): already held; the customer's service tier below the product's min_tier; a product
above risk_free_level without a valid questionnaire; a product above the customer's
max_product_risk_level. Only candidates passing all are ranked.

Propensity training (every retrain_every_days, saved as an artifact): month-end snapshots
whose horizon has passed; customer_features recomputed at each for a seeded sample of
propensity.training_customers customers; one row per customer and product he did not hold then,
labelled 1 when he held it by the end of the horizon; at most max_training_rows /
training_snapshots such rows per snapshot (a seeded sample beyond that).

Checks: (customer_id, as_of, rank) unique; product never held; score > 0.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl

from models.propensity import fit_propensities
from pipeline.artifacts import StageContext, settings_hash
from pipeline.config import AumTierParams, CustomerFeaturesParams, NextBestProductParams
from pipeline.errors import ConfigError
from pipeline.expectations import Check, between, not_null
from transforms.rules import rule_sql
from transforms.scratch import materialise, scratch_table
from transforms.snapshots import (
    feature_matrix,
    feature_sources,
    features_at,
    holdings_on,
    month_end_snapshots,
    scoring_batches,
    seeded_order,
    training_sample,
)
from transforms.staging import literal, quote

EXCLUSIONS = ("already_held", "tier_not_eligible", "no_valid_questionnaire", "risk_above_class")
PROPENSITY_FORMAT = 1
# scratch tables of a run (dropped after the stage): what each customer holds on as_of, his
# basket, the propensity scores (a column per product) and every candidate with its exclusion
HELD, BASKETS, PROPENSITY_BY_PRODUCT, CANDIDATES = (
    scratch_table("next_best_products", part)
    for part in ("held", "baskets", "propensity", "candidates")
)


def _signal_sql(params: NextBestProductParams, features: str, columns: set[str]) -> str:
    parts = []
    for i, signal in enumerate(params.signals):
        used = {c for alternative in signal.alternatives for c in alternative}
        named = set(re.findall(r"{(\w+)}", signal.reason))
        unknown = sorted((used | named) - columns)
        if unknown:
            raise ConfigError(f"next_best_products.signals[{i}]: unknown feature(s) {unknown}")
        condition, _ = rule_sql(signal)  # a signal's `when` reads like a rule's
        reason = literal(signal.reason)
        for name in sorted(named):
            value = f"regexp_replace(round({quote(name)}::double, 2)::varchar, '\\.0+$', '')"
            reason = f"replace({reason}, {literal('{' + name + '}')}, coalesce({value}, '?'))"
        parts.append(
            f"select customer_id, {literal(signal.product)} as product_id, "
            f"{signal.score!r} as signal_score, {reason} as signal_reason "
            f"from {features} where {condition}"
        )
    empty = "select null::varchar, null::varchar, null::double, null::varchar where false"
    return " union all ".join(parts) or empty


def _rule_hits_sql(baskets: str, product_rules: str) -> str:
    """Per basket (`held`, a list of product_ids) of `baskets`: the strongest rule per product
    not in it whose left side it holds. Ties in lift go to the shorter left side, then the
    first antecedent_key, so the same rule explains a product in every run.

    Baskets and left sides are bitstrings over the products either names, and matching every
    basket against every rule is a bitwise AND: at 1M customers (8,369 distinct baskets x
    1,376 rules) a third of list_has_all's time."""

    def bits_of(products: str) -> str:  # a list of product_ids, as one bit per product_bits row
        return (
            f"string_agg(if(list_contains({products}, p.product_id), '1', '0'), '' "
            "order by p.bit)::bit"
        )

    return f"""
        with product_bits as (
            select product_id, (row_number() over (order by product_id) - 1)::integer as bit
            from (select unnest(held) as product_id from {baskets}
                  union select consequent from {product_rules}
                  union select unnest(antecedent) from {product_rules})
        ),
        basket_bits as (
            select b.held, {bits_of("b.held")} as bits
            from (select distinct held from {baskets}) b cross join product_bits p
            group by b.held
        ),
        rule_bits as (
            select r.consequent, any_value(c.bit) as consequent_bit, r.antecedent_key,
                   any_value(len(r.antecedent)) as antecedent_size,
                   any_value(r.lift) as lift, any_value(r.confidence) as confidence,
                   {bits_of("r.antecedent")} as antecedent_bits
            from {product_rules} r
            join product_bits c on c.product_id = r.consequent
            cross join product_bits p
            group by r.consequent, r.antecedent_key
        )
        select b.held, r.consequent as product_id,
               max(r.lift) as rule_lift,
               first(r.confidence order by r.lift desc, r.antecedent_size, r.antecedent_key)
                   as rule_confidence,
               first(r.antecedent_key order by r.lift desc, r.antecedent_size, r.antecedent_key)
                   as rule_antecedent
        from basket_bits b join rule_bits r
          on (b.bits & r.antecedent_bits) = r.antecedent_bits
         and get_bit(b.bits, r.consequent_bit) = 0
        group by b.held, r.consequent"""


def _propensity_settings(params: NextBestProductParams, features: CustomerFeaturesParams) -> str:
    return settings_hash(PROPENSITY_FORMAT, params.propensity, params.horizon_days, features)


def _train_propensity(con, stg_transactions, sources, params, features_params, as_of, context):
    settings = params.propensity
    snapshots = month_end_snapshots(as_of, params.horizon_days, settings.training_snapshots)
    columns = ", ".join(f"f.{quote(c)}::double as {quote(c)}" for c in settings.features)
    later = f"$snapshot + {params.horizon_days}"
    frames = []
    with training_sample(
        con,
        stg_transactions=stg_transactions,
        sources=sources,
        customers=settings.training_customers,
        seed=settings.seed,
        name="propensity_sample",
    ) as (sample_transactions, sample_sources):
        for snapshot in snapshots:
            table = features_at(
                con,
                stg_transactions=sample_transactions,
                sources=sample_sources,
                params=features_params,
                snapshot=snapshot,
                table=f"propensity_features_{snapshot:%Y%m%d}",
            )
            frames.append(
                con.sql(
                    f"""
                with held_then as ({holdings_on(sample_sources["stg_balances"], "$snapshot")}),
                held_later as ({holdings_on(sample_sources["stg_balances"], later)}),
                catalog as (select distinct product_id from {sources["stg_products"]})
                select f.customer_id, c.product_id, {columns},
                       (l.customer_id is not null)::int as acquired
                from {table} f cross join catalog c
                left join held_then t
                  on t.customer_id = f.customer_id and t.product_id = c.product_id
                left join held_later l
                  on l.customer_id = f.customer_id and l.product_id = c.product_id
                where t.customer_id is null
                order by {seeded_order(settings.seed, "f.customer_id", "c.product_id")}
                limit $max_rows
                """,
                    params={
                        "snapshot": snapshot,
                        "max_rows": settings.max_training_rows // len(snapshots),
                    },
                )
                .pl()
                .sort("customer_id", "product_id")
            )
            con.execute(f"drop table {table}")
    examples = pl.concat(frames)
    x = feature_matrix(examples, settings.features)
    empty = np.isnan(x).all(axis=0)
    x[:, empty] = 0.0
    models = fit_propensities(
        x,
        examples["product_id"].to_numpy(),
        examples["acquired"].to_numpy(),
        settings.features,
        min_acquisitions=settings.min_acquisitions,
        seed=settings.seed,
        **settings.model.model_dump(),
    )
    models.empty = empty
    metadata = {
        "trained_on": as_of.isoformat(),
        "config_hash": _propensity_settings(params, features_params),
        "training_from": snapshots[0].isoformat(),
        "training_to": (snapshots[-1] + timedelta(days=params.horizon_days)).isoformat(),
        "snapshots": [s.isoformat() for s in snapshots],
        "acquisitions": models.acquisitions,
        "modelled_products": sorted(models.models),
    }
    artifact = context.artifacts.save(
        f"{as_of.isoformat()}-{metadata['config_hash']}", models, metadata
    )
    modelled = ", ".join(sorted(models.models)) or "no product (too few acquisitions)"
    context.info(f"    next_best_products: propensity models for {modelled}")
    return artifact


def next_best_products(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    risk_profiles: str,
    aum_tiers: str | None,
    product_rules: str,
    stg_transactions: str,
    stg_customers: str | None,
    stg_balances: str,
    stg_products: str,
    stg_events: str | None,
    stg_questionnaires: str | None,
    params: NextBestProductParams,
    aum_tiers_params: AumTierParams,
    customer_features_params: CustomerFeaturesParams,
    as_of: date,
    context: StageContext,
) -> duckdb.DuckDBPyRelation:
    columns = set(con.table(customer_features).columns)
    unknown = sorted(set(params.propensity.features) - columns)
    if unknown:
        raise ConfigError(f"next_best_products.propensity.features: {unknown} not in features")
    sources = feature_sources(
        stg_customers, stg_balances, stg_products, stg_events, stg_questionnaires
    )

    # --- propensity: reuse the saved models between retrains ----------------------------------
    settings = _propensity_settings(params, customer_features_params)
    artifact = context.artifacts.reusable(as_of, settings, params.propensity.retrain_every_days)
    if artifact is None:
        artifact = _train_propensity(
            con, stg_transactions, sources, params, customer_features_params, as_of, context
        )
    models = artifact.load()
    rates = {  # 90-day acquisition rate of each product among customers not holding it
        product: models.acquisitions[product] / examples
        for product, examples in sorted(models.examples.items())
        if examples
    }
    feature_list = ", ".join(
        f"{quote(c)}::double as {quote(c)}" for c in params.propensity.features
    )
    # what each customer holds on as_of, read once: the propensity models skip held products
    # (never recommended), the rules match baskets, suitability excludes held pairs
    materialise(con, HELD, holdings_on(stg_balances, "$as_of"), {"as_of": as_of})
    materialise(
        con,
        BASKETS,
        f"""
        select f.customer_id, coalesce(h.held, []) as held
        from {customer_features} f left join (
            select customer_id, list(product_id order by product_id) as held
            from {HELD} group by customer_id
        ) h using (customer_id)
        """,
    )
    # one column of propensities per modelled product (null where the customer holds it),
    # unpivoted to (customer_id, product_id, propensity) in DuckDB: a row per customer crosses
    # into DuckDB, not a row per customer and product
    modelled = sorted(models.models)
    customer_ids, scores = [], {product: [] for product in modelled}
    for frame, x in scoring_batches(  # one batch's feature matrix in memory at a time
        con,
        f"""
        select f.customer_id, {feature_list}, b.held
        from {customer_features} f join {BASKETS} b using (customer_id)
        order by f.customer_id
        """,
        params.propensity.features,
    ):
        x[:, models.empty] = 0.0
        customer_ids.append(frame["customer_id"])
        for product, batches in scores.items():
            open_to = ~frame["held"].list.contains(product).to_numpy()
            batch = np.full(len(frame), np.nan)
            if open_to.any():  # else everyone in the batch holds it
                batch[open_to] = models.predict(product, x[open_to])
            batches.append(batch)
    if modelled and customer_ids:
        wide = pl.DataFrame(
            [pl.concat(customer_ids)]
            + [pl.Series(p, np.concatenate(b)).fill_nan(None) for p, b in scores.items()]
        )
        con.register(PROPENSITY_BY_PRODUCT, wide.to_arrow())
        propensity = (
            f"(unpivot {PROPENSITY_BY_PRODUCT} on {', '.join(quote(p) for p in modelled)} "
            "into name product_id value propensity)"
        )
    else:
        propensity = (
            "(select null::varchar as customer_id, null::varchar as product_id,"
            " null::double as propensity where false)"
        )

    tiers = aum_tiers or "(select null::varchar as customer_id, null::varchar as service_tier)"
    tier_order = [t.code for t in aum_tiers_params.tiers] + [aum_tiers_params.private_banking.code]
    weights = params.weights
    materialise(
        con,
        CANDIDATES,
        f"""
        with held as (from {HELD}),
        baskets as (from {BASKETS}),
        signals as (
            select customer_id, product_id, max(signal_score) as signal_score,
                   string_agg(signal_reason, '; ' order by signal_score desc, signal_reason)
                       as signal_reason
            from ({_signal_sql(params, customer_features, columns)}) s
            group by all
        ),
        signal_baskets as materialized (  -- a few pairs: joined to the rules on their own
            select distinct s.customer_id, s.product_id, b.held
            from signals s join baskets b using (customer_id)
        ),
        rule_hits as (
            -- A rule's pair can pass min_score on its own or with a propensity (a product
            -- with a model is scored for every customer not holding it), else only with a
            -- signal: decided per basket, so the others are never joined to every customer
            -- holding it (at 5M customers, 43 M rule pairs before, of 20.8 M candidates)
            select *, list_contains($modelled, product_id)
                      or {weights.rules!r} * rule_score >= $min_score as may_pass
            from (
                -- on the scale of a probability: the product's base take-up rate x the lift
                select *, least(1, rule_lift * coalesce(
                           $base_rates[list_position($rated_products, product_id)], 0))
                           as rule_score
                from ({_rule_hits_sql("baskets", product_rules)})
            )
        ),
        rules as (
            select b.customer_id, h.* exclude (held, may_pass)
            from baskets b join rule_hits h using (held)
            where h.may_pass
            union all
            select s.customer_id, h.* exclude (held, may_pass)
            from signal_baskets s
            join rule_hits h on h.held = s.held and h.product_id = s.product_id
            where not h.may_pass
        ),
        held_signals as (
            -- the only held pairs among the candidates: rules never propose a product in the
            -- basket, and propensity is never scored for one
            select customer_id, product_id
            from signals semi join held using (customer_id, product_id)
        ),
        blended as (
            select customer_id, product_id, r.rule_confidence, r.rule_antecedent,
                   r.rule_lift, r.rule_score, p.propensity, s.signal_score, s.signal_reason
            from rules r
            full join {propensity} p using (customer_id, product_id)
            full join signals s using (customer_id, product_id)
        )
        select b.*,
               {weights.rules!r} * coalesce(b.rule_score, 0)
               + {weights.propensity!r} * coalesce(b.propensity, 0)
               + {weights.signals!r} * coalesce(b.signal_score, 0) as score,
               p.product_name, p.risk_level, nullif(p.min_tier, '') as min_tier,
               t.service_tier, r.questionnaire_status, r.max_product_risk_level,
               r.stated_risk_class,
               case
                   when h.customer_id is not null then 'already_held'
                   when nullif(p.min_tier, '') is not null and coalesce(
                       list_position($tier_order, t.service_tier)
                       < list_position($tier_order, p.min_tier), true) then 'tier_not_eligible'
                   when p.risk_level > $risk_free
                        and coalesce(r.questionnaire_status, 'missing') <> 'valid'
                       then 'no_valid_questionnaire'
                   when p.risk_level > r.max_product_risk_level then 'risk_above_class'
               end as exclusion
        from blended b
        join {stg_products} p using (product_id)
        left join held_signals h using (customer_id, product_id)
        left join {tiers} t using (customer_id)
        left join {risk_profiles} r using (customer_id)
        where {weights.rules!r} * coalesce(b.rule_score, 0)
              + {weights.propensity!r} * coalesce(b.propensity, 0)
              + {weights.signals!r} * coalesce(b.signal_score, 0) >= $min_score
    """,
        {
            "tier_order": tier_order,
            "risk_free": params.risk_free_level,
            "min_score": max(params.min_score, 1e-12),
            "rated_products": list(rates),
            "modelled": sorted(models.models),
            "base_rates": list(rates.values()),
        },
    )
    counts = dict(
        con.execute(
            f"select coalesce(exclusion, 'passed'), count(*) from {CANDIDATES} group by all"
        ).fetchall()
    )
    context.detail["candidates"] = sum(counts.values())
    context.detail["exclusions"] = {reason: counts.get(reason, 0) for reason in EXCLUSIONS}
    context.detail["propensity_model"] = artifact.version
    return con.sql(
        f"""
        with ranked as (  -- on the key and score alone: the window does not carry the wide
            -- candidate rows, only the top k's are fetched (at 5M customers the final query
            -- and write took 22.3 and 23.5 s where ranking the wide rows took 26.5 and 26.2 s)
            select customer_id, product_id, row_number() over (
                partition by customer_id order by score desc, product_id) as rank
            from {CANDIDATES} where exclusion is null
            qualify rank <= {params.top_k}
        ),
        top_k as (  -- sorted before the texts and sources are built, so the sort does not
            -- carry them (at 5M customers the final query took 22.1 s where it took 26.2 s
            -- with the texts)
            select c.*, r.rank
            from ranked r join {CANDIDATES} c using (customer_id, product_id)
            order by customer_id, rank
        )
        select customer_id, $as_of::date as as_of, rank::integer as rank, product_id,
               product_name, round(score, 6) as score,
               list_filter([
                   case when rule_score > 0 then 'rules' end,
                   case when propensity is not null then 'propensity' end,
                   case when signal_score is not null then 'signals' end
               ], lambda s: s is not null) as sources,
               concat_ws('; ',
                   case when rule_score > 0 then
                       'holds ' || rule_antecedent || ': ' || round(100 * rule_confidence)::int
                       || '% of such customers hold it (lift ' || round(rule_lift, 1) || ')'
                   end,
                   case when propensity is not null then
                       'propensity ' || round(100 * propensity, 1) || '% in '
                       || {params.horizon_days} || ' days' end,
                   signal_reason) as reason_text,
               'risk ' || risk_level || ' <= ' || coalesce(max_product_risk_level, $risk_free)
                   || ' (' || coalesce(stated_risk_class || ', questionnaire '
                   || questionnaire_status, 'no valid questionnaire') || '); tier '
                   || coalesce(service_tier, 'unknown') || ' >= ' || coalesce(min_tier, 'any')
                   || '; not held' as suitability_check,
               rule_score, rule_confidence, rule_lift, rule_antecedent, propensity, signal_score
        from top_k
        """,
        params={"as_of": as_of, "risk_free": params.risk_free_level},
    )


def expectations(params: NextBestProductParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    return [between("rank", 1, params.top_k), between("score", 0), *not_null("product_id")]
