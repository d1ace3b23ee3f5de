"""risk_profiles: stated risk appetite from the questionnaire, cross-checked with behaviour.

Grain: one row per customer_id and as_of (every customer in customer_features).
    risk_score, risk_assessed_on     the latest risk questionnaire on or before as_of
    questionnaire_status             valid | expired (older than questionnaire_valid_months) |
                                     missing
    stated_risk_class, stated_risk_class_name_zh
                                     the class whose min_score is the highest at or below the
                                     score (null when missing; kept when expired)
    max_product_risk_level           the riskiest level the customer may be sold: the stated
                                     class's max_product_risk while the questionnaire is valid,
                                     null (no risk product) when expired or missing
    highest_risk_level_held, risk_asset_share, risk_purchases_90d_cny   from customer_features
    behavioural_risk_level           the highest product risk level among holdings worth at
                                     least material_holding_share of AUM (null without AUM)
    behavioural_risk_class           the lowest class allowed to hold that level
    is_risk_mismatch                 behaviour is riskier than the stated class allows
    is_latent_aggressive             stated class at most latent_aggressive.max_stated_class
                                     and a risk-asset share or recent risk purchases above the
                                     thresholds (the cautious customer who buys risk anyway)
    risk_flags                       the flags that apply, as a list: risk_mismatch,
                                     latent_aggressive, questionnaire_expired,
                                     questionnaire_missing

Checks: customer_id unique; questionnaire_status in (valid, expired, missing); class codes
from config; risk_asset_share within 0..1.
"""

from __future__ import annotations

from datetime import date

import duckdb

from pipeline.config import RiskProfileParams
from pipeline.expectations import Check, between, in_set
from transforms.sources import RISK_LEVELS


def risk_profiles(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_features: str,
    params: RiskProfileParams,
    as_of: date,
) -> duckdb.DuckDBPyRelation:
    codes = [c.code for c in params.classes]
    material = " ".join(
        f"when aum_share_{level.lower()} >= $material then '{level}'"
        for level in reversed(RISK_LEVELS)
    )
    latent = params.latent_aggressive
    return con.sql(
        f"""
        with stated as (
            select customer_id, risk_score, risk_assessed_on,
                   case when risk_score is null then 'missing'
                        when risk_assessment_expired then 'expired'
                        else 'valid' end as questionnaire_status,
                   -- 1-based class positions; null without a score
                   case when risk_score is not null then
                       list_count(list_filter($min_scores, lambda m: m <= risk_score)) end
                       as stated_index,
                   highest_risk_level_held, risk_asset_share, risk_purchases_90d_cny,
                   case {material} end as behavioural_risk_level
            from {customer_features}
        ),
        classified as (
            select *,
                   list_position(
                       list_transform($max_levels, lambda l: l >= behavioural_risk_level), true
                   ) as behavioural_index
            from stated
        ),
        flagged as (
            select *,
                   coalesce(behavioural_index > stated_index, false) as is_risk_mismatch,
                   coalesce(stated_index <= $latent_max_index and (
                       coalesce(risk_asset_share, 0) >= $latent_share
                       or coalesce(risk_purchases_90d_cny, 0) >= $latent_purchases
                       and risk_purchases_90d_cny > 0), false) as is_latent_aggressive
            from classified
        )
        select customer_id, $as_of::date as as_of, risk_score, risk_assessed_on,
               questionnaire_status,
               $codes[stated_index] as stated_risk_class,
               $names[stated_index] as stated_risk_class_name_zh,
               case when questionnaire_status = 'valid' then $max_levels[stated_index] end
                   as max_product_risk_level,
               highest_risk_level_held, risk_asset_share, risk_purchases_90d_cny,
               behavioural_risk_level,
               $codes[behavioural_index] as behavioural_risk_class,
               is_risk_mismatch, is_latent_aggressive,
               list_filter([
                   case when is_risk_mismatch then 'risk_mismatch' end,
                   case when is_latent_aggressive then 'latent_aggressive' end,
                   case when questionnaire_status = 'expired' then 'questionnaire_expired' end,
                   case when questionnaire_status = 'missing' then 'questionnaire_missing' end
               ], lambda f: f is not null) as risk_flags
        from flagged
        order by customer_id
        """,
        params={
            "as_of": as_of,
            "codes": codes,
            "names": [c.name_zh for c in params.classes],
            "min_scores": [c.min_score for c in params.classes],
            "max_levels": [c.max_product_risk for c in params.classes],
            "material": params.material_holding_share,
            "latent_max_index": codes.index(latent.max_stated_class) + 1,
            "latent_share": latent.min_risk_asset_share,
            "latent_purchases": latent.min_risk_purchases_90d_cny,
        },
    )


def expectations(params: RiskProfileParams) -> list[Check]:
    """What the table must satisfy beyond its key; checked before it is published."""
    codes = [c.code for c in params.classes]
    return [
        in_set("questionnaire_status", ["valid", "expired", "missing"]),
        in_set("stated_risk_class", codes),
        in_set("behavioural_risk_class", codes),
        between("risk_asset_share", 0, 1),
        between("risk_score", 0, 100),
    ]
