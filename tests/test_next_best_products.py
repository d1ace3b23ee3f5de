"""next_best_products: suitability on hand-written rows (every exclusion, counted), the blend
and ranking, invariants on the sample bank, propensity, and the out-of-time evaluation."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from models.propensity import PropensityModels, fit_propensities
from pipeline.artifacts import ArtifactStore, StageContext
from pipeline.config import load_config
from pipeline.ingest import register_staged_views
from pipeline.warehouse import open_catalog, partition_path
from tests.conftest import DEFAULT_CONFIG, quiet
from transforms.next_best_products import (
    _propensity_settings,
    _rule_hits_sql,
    next_best_products,
)

CONFIG = load_config(DEFAULT_CONFIG, environ={})
AS_OF = date(2026, 3, 31)


class FixedPropensities(PropensityModels):
    """Stands in for fitted models: one fixed propensity per product, for everyone."""

    def predict(self, product: str, x: np.ndarray) -> np.ndarray | None:
        return np.full(len(x), self.models[product]) if product in self.models else None


@pytest.fixture
def golden(tmp_path):
    return _golden_lists(tmp_path)


def _golden_lists(tmp_path, propensities=None):
    """The hand-written bank below through next_best_products: (lists by customer, detail).
    `propensities`: product -> a fixed propensity for everyone (default: no models)."""
    con = duckdb.connect()
    con.execute("""
        create table features as select * from (values
            ('held',      40, 5, 0), ('cautious', 40, 5, 5), ('expired', 40, 5, 5),
            ('affluent',  40, 0, 0), ('hnw',      40, 0, 0), ('basic',    40, 0, 0)
        ) t(customer_id, age_years, views_funds_30d, views_deposits_30d);
        create table risks as select * from (values
            ('held', 'valid', 'R5', 'aggressive'), ('cautious', 'valid', 'R1', 'conservative'),
            ('expired', 'expired', NULL, 'aggressive'), ('affluent', 'valid', 'R5', 'aggressive'),
            ('hnw', 'valid', 'R5', 'aggressive'), ('basic', 'valid', 'R2', 'steady')
        ) t(customer_id, questionnaire_status, max_product_risk_level, stated_risk_class);
        create table tiers as select * from (values
            ('held', 'mass'), ('cautious', 'mass'), ('expired', 'mass'), ('affluent', 'affluent'),
            ('hnw', 'hnw'), ('basic', 'mass')
        ) t(customer_id, service_tier);
        create table products as select * from (values
            ('DEP', 'Current account', 'R1', ''), ('TIME', 'Time deposit', 'R1', ''),
            ('FUND', 'Equity fund', 'R4', ''), ('QUANT', 'Quant fund', 'R5', 'hnw'),
            ('CARD', 'Credit card', 'R1', '')
        ) t(product_id, product_name, risk_level, min_tier);
        create table balances as
            select customer_id, unnest(['DEP']) as product_id, DATE '2026-03-31' as balance_on,
                   100.00 as balance_cny from features
            union all select 'held', 'FUND', DATE '2026-03-31', 50.00;
        create table rules as select ['DEP'] as antecedent, 'DEP' as antecedent_key,
            'CARD' as consequent, 0.5 as confidence, 2.0 as lift
        -- TIME has no base rate: this rule scores 0, and shows only where a signal proposes TIME
        union all select ['DEP'], 'DEP', 'TIME', 0.4, 1.5;
        create table txns (customer_id varchar);
    """)
    base = CONFIG.next_best_products.model_dump(by_alias=True)
    params = type(CONFIG.next_best_products).model_validate(
        {
            **base,
            "top_k": 2,
            "signals": [
                {
                    "product": "FUND",
                    "reason": "fund pages {views_funds_30d} times",
                    "score": 0.5,
                    "when": {"views_funds_30d": {"ge": 3}},
                },
                {
                    "product": "TIME",
                    "reason": "deposit pages",
                    "score": 0.4,
                    "when": {"views_deposits_30d": {"ge": 3}},
                },
                {
                    "product": "QUANT",
                    "reason": "everyone",
                    "score": 0.3,
                    "when": {"age_years": {"ge": 18}},
                },
            ],
            "propensity": {**base["propensity"], "features": ["age_years"]},
        }
    )
    store = ArtifactStore(tmp_path / "models")
    saved = FixedPropensities(
        ["age_years"],
        models=dict(propensities or {}),
        acquisitions={"CARD": 10},
        examples={"CARD": 100},
        empty=np.array([False]),
    )
    store.save(
        "golden",
        saved,
        {
            "trained_on": AS_OF.isoformat(),
            "config_hash": _propensity_settings(params, CONFIG.customer_features),
        },
    )
    context = StageContext("next_best_products", "test", store, lambda m: None, lambda m: None)
    relation = next_best_products(
        con,
        customer_features="features",
        risk_profiles="risks",
        aum_tiers="tiers",
        product_rules="rules",
        stg_transactions="txns",
        stg_customers=None,
        stg_balances="balances",
        stg_products="products",
        stg_events=None,
        stg_questionnaires=None,
        params=params,
        aum_tiers_params=CONFIG.aum_tiers,
        customer_features_params=CONFIG.customer_features,
        as_of=AS_OF,
        context=context,
    )
    lists = {}
    for row in relation.pl().iter_rows(named=True):
        lists.setdefault(row["customer_id"], []).append(row)
    return lists, context.detail


def test_every_suitability_rule_and_its_count(golden):
    lists, detail = golden
    products = {c: [r["product_id"] for r in rows] for c, rows in lists.items()}
    assert products["held"] == ["CARD"]  # FUND is held: never offered again
    assert products["cautious"] == ["TIME", "CARD"]  # risk R1 only
    assert products["expired"] == ["TIME", "CARD"]  # expired: no FUND (R4) at all
    assert products["affluent"] == ["CARD"]  # QUANT needs hnw
    assert products["hnw"] == ["QUANT", "CARD"]
    assert products["basic"] == ["CARD"]
    assert detail["exclusions"] == {
        "already_held": 1,
        "tier_not_eligible": 5,  # QUANT for every tier below hnw
        "no_valid_questionnaire": 1,
        "risk_above_class": 1,
    }


def test_a_rule_scoring_zero_still_explains_a_product_proposed_by_propensity(tmp_path):
    """DEP -> TIME scores 0 (TIME has no base rate), so it is dropped before the customer
    pairs are built unless something else can score that pair: here TIME's propensity."""
    lists, _ = _golden_lists(tmp_path, {"TIME": 0.05})
    time = next(r for r in lists["basic"] if r["product_id"] == "TIME")
    assert time["sources"] == ["propensity"] and time["propensity"] == pytest.approx(0.05)
    assert (time["rule_antecedent"], time["rule_lift"], time["rule_score"]) == ("DEP", 1.5, 0)


def test_scores_reasons_and_checks_are_readable(golden):
    lists, _ = golden
    card = lists["basic"][0]
    assert card["rule_score"] == pytest.approx(0.2)  # base rate 10/100 x lift 2
    assert card["score"] == pytest.approx(0.2) and card["sources"] == ["rules"]
    assert "holds DEP: 50% of such customers hold it (lift 2" in card["reason_text"]
    assert card["suitability_check"] == (
        "risk R1 <= R2 (steady, questionnaire valid); tier mass >= any; not held"
    )
    quant = lists["hnw"][0]
    assert quant["rank"] == 1 and quant["score"] == pytest.approx(0.3)
    assert "tier hnw >= hnw" in quant["suitability_check"]
    time = lists["cautious"][0]
    assert time["reason_text"] == "deposit pages" and time["sources"] == ["signals"]
    assert (time["rule_antecedent"], time["rule_lift"], time["rule_score"]) == ("DEP", 1.5, 0)


def test_propensity_models_learn_and_skip_rare_products():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6_000, 3))
    products = np.array(["A", "B", "C"])[rng.integers(0, 3, 6_000)]
    acquired = ((products == "A") & (x[:, 0] + rng.normal(0, 0.5, 6_000) > 1.5)).astype(int)
    acquired[(products == "B")[:] & (np.arange(6_000) < 300)] = 1  # B: random take-up
    models = fit_propensities(
        x,
        products,
        acquired,
        ["f0", "f1", "f2"],
        min_acquisitions=20,
        seed=1,
        max_iter=50,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=0.0,
    )
    a = products == "A"
    assert roc_auc_score(acquired[a], models.predict("A", x[a])) > 0.85
    assert "C" not in models.models and models.acquisitions["C"] == 0
    assert models.predict("C", x) is None


def test_lists_on_the_sample_bank_are_suitable_and_counted(small_bank):
    config, _, manifest = small_bank
    con = open_catalog(config.paths.warehouse)
    total, customers, worst_rank = con.sql(
        "select count(*), count(distinct customer_id), max(rank) from next_best_products"
    ).fetchall()[0]
    assert total > 0 and worst_rank <= config.next_best_products.top_k
    raw = duckdb.connect()
    register_staged_views(raw, config.paths.staging, config.generate.end_on)
    nbp = partition_path(config.paths.warehouse, "next_best_products", config.generate.end_on)
    held = raw.sql(
        """
        select count(*) from read_parquet($nbp) n join stg_balances b
          on b.customer_id = n.customer_id and b.product_id = n.product_id
        where b.balance_on = (select max(balance_on) from stg_balances) and b.balance_cny > 0
        """,
        params={"nbp": str(nbp)},
    ).fetchall()[0][0]
    assert held == 0  # never a product already held
    keys = pl.read_parquet(nbp, columns=["customer_id", "rank"])
    assert keys.equals(keys.sort("customer_id", "rank"))  # written in key order
    risky = con.sql("""
        select count(*) from next_best_products n join risk_profiles r using (customer_id)
        where regexp_extract(n.suitability_check, 'risk (R[1-5])', 1) > 'R1'
          and r.questionnaire_status <> 'valid'
    """).fetchall()[0][0]
    above = con.sql("""
        select count(*) from next_best_products n join risk_profiles r using (customer_id)
        where regexp_extract(n.suitability_check, 'risk (R[1-5])', 1) > r.max_product_risk_level
    """).fetchall()[0][0]
    assert risky == 0 and above == 0
    stage = next(s for s in manifest.stages if s.stage == "next_best_products")
    assert set(stage.detail["exclusions"]) == {
        "already_held",
        "tier_not_eligible",
        "no_valid_questionnaire",
        "risk_above_class",
    }
    assert stage.detail["candidates"] >= total


def test_evaluation_replays_a_past_date_and_scores_both_methods(small_bank):
    from pipeline.errors import UsageError
    from pipeline.evaluate import evaluate_nbp

    config, _, _ = small_bank
    past = config.generate.end_on - timedelta(days=95)
    figures = evaluate_nbp(config, past, quiet())
    for method in ("blend", "popularity"):
        f = figures[method]
        assert f["customers"] > 400 and 0 <= f["hits"] <= f["recommendations"]
        for share in ("hit_rate_at_k", "precision_at_k", "coverage"):
            assert f[share] is None or 0 <= f[share] <= 1
    assert figures["blend"]["acquirers"] == figures["popularity"]["acquirers"] > 0
    assert (config.paths.warehouse / "evaluations" / f"nbp_{past}.json").exists()
    assert not (config.paths.temp / f"evaluate-nbp-{past}").exists()  # scratch removed
    with pytest.raises(UsageError, match="horizon ends"):
        evaluate_nbp(config, config.generate.end_on - timedelta(days=10), quiet())


def _plain_rule_hits(baskets: list[list[str]], rules: list[tuple]) -> set[tuple]:
    """The strongest rule per basket and product, straight from the definition."""
    best = {}
    for held in baskets:
        for antecedent, consequent, confidence, lift in rules:
            if set(antecedent) <= set(held) and consequent not in held:
                rank = (-lift, len(antecedent), " + ".join(antecedent))
                key = (tuple(held), consequent)
                if key not in best or rank < best[key][0]:
                    best[key] = (rank, lift, confidence, " + ".join(antecedent))
    return {(*key, lift, conf, ante) for key, (_, lift, conf, ante) in best.items()}


def test_rule_matching_by_bitstrings_equals_the_plain_definition():
    rng = np.random.default_rng(7)
    products = [f"P{i:02d}" for i in range(12)]
    baskets = [[], ["P00"], products]  # empty, one product, every product
    baskets += [sorted(rng.choice(products, rng.integers(1, 8), replace=False)) for _ in range(60)]
    rules = []
    for _ in range(150):
        items = sorted(rng.choice(products, rng.integers(2, 5), replace=False))
        consequent, antecedent = items[-1], items[:-1]
        lift = float(rng.choice([1.5, 2.0, 2.5]))  # few values: many ties to break
        rules.append((antecedent, consequent, float(rng.uniform(0.1, 0.9)), lift))
    rules.append((["P99"], "P00", 0.5, 9.0))  # a product no basket holds: never matches
    unique = {(tuple(a), c): (a, c, conf, lift) for a, c, conf, lift in rules}
    rules = list(unique.values())

    con = duckdb.connect()
    con.execute("create table baskets (customer_id varchar, held varchar[])")
    con.executemany(
        "insert into baskets values (?, ?)", [[str(i), b] for i, b in enumerate(baskets)]
    )
    con.execute(
        "create table rules (antecedent varchar[], antecedent_key varchar, consequent varchar, "
        "confidence double, lift double)"
    )
    con.executemany(
        "insert into rules values (?, ?, ?, ?, ?)",
        [[a, " + ".join(a), c, conf, lift] for a, c, conf, lift in rules],
    )
    found = {
        (tuple(held), product, lift, confidence, antecedent)
        for held, product, lift, confidence, antecedent in con.execute(
            _rule_hits_sql("baskets", "rules")
        ).fetchall()
    }
    expected = _plain_rule_hits(baskets, rules)
    assert len(expected) > 100
    assert found == expected
