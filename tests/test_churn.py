"""Churn early warning: labels on hand-written rows, point-in-time training features (no
leakage from after the snapshot), reason codes, bands, the retraining cadence, and the
out-of-time comparison with the recency baseline on the sample bank."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import duckdb
import numpy as np
import pytest

from models.churn import fit_churn_model, lift_at
from pipeline.config import load_config
from pipeline.ingest import register_staged_views
from pipeline.warehouse import open_catalog
from tests.conftest import DEFAULT_CONFIG
from transforms.churn_scores import (
    churn_labels,
    snapshot_dates,
    training_examples,
)
from transforms.snapshots import feature_matrix, feature_sources, training_sample

CONFIG = load_config(DEFAULT_CONFIG, environ={})
SNAPSHOT = date(2026, 3, 31)


def test_snapshots_are_month_ends_whose_horizon_has_passed():
    dates = snapshot_dates(date(2026, 11, 3), CONFIG.churn_scores)
    assert dates[-1] == date(2026, 7, 31)  # 2026-11-03 - 90 days = 2026-08-05
    assert dates[0] == date(2025, 12, 31) and len(dates) == 8
    assert snapshot_dates(date(2026, 10, 29), CONFIG.churn_scores)[-1] == date(2026, 7, 31)


def test_labels_aum_drop_inactivity_and_eligibility():
    con = duckdb.connect()
    con.execute("""
        create table features as select * from (values
            ('drop_70', 1000.00), ('drop_69', 1000.00), ('silent', 500.00),
            ('salary_only', 500.00), ('logs_in', 500.00), ('never_active', 0.00)
        ) t(customer_id, aum_cny);
        create table txns as select * from (values
            ('drop_70', TIMESTAMP '2026-03-20 10:00:00', 'shopping'),
            ('drop_70', TIMESTAMP '2026-04-10 10:00:00', 'shopping'),
            ('drop_69', TIMESTAMP '2026-03-20 10:00:00', 'shopping'),
            ('drop_69', TIMESTAMP '2026-04-10 10:00:00', 'shopping'),
            ('silent', TIMESTAMP '2026-03-31 23:00:00', 'shopping'),
            ('silent', TIMESTAMP '2026-06-30 10:00:00', 'shopping'),  -- day 91: too late
            ('salary_only', TIMESTAMP '2026-03-01 10:00:00', 'bills'),
            ('salary_only', TIMESTAMP '2026-04-10 10:00:00', 'salary'),
            ('logs_in', TIMESTAMP '2026-03-02 10:00:00', 'bills')
        ) t(customer_id, transaction_at, category);
        create table events as select * from (values
            ('logs_in', TIMESTAMP '2026-06-29 10:00:00')  -- day 90: in the horizon
        ) t(customer_id, event_at);
        create table products as
            select * from (values ('DEP', 'asset')) t(product_id, balance_type);
        create table balances as select * from (values
            ('drop_70', 'DEP', DATE '2026-06-29', 300.00),
            ('drop_69', 'DEP', DATE '2026-06-29', 310.00),
            ('silent', 'DEP', DATE '2026-06-29', 500.00),
            ('salary_only', 'DEP', DATE '2026-06-29', 500.00),
            ('logs_in', 'DEP', DATE '2026-06-29', 500.00),
            ('drop_69', 'DEP', DATE '2026-07-31', 0.00)           -- after the horizon
        ) t(customer_id, product_id, balance_on, balance_cny);
    """)
    rows = {
        r[0]: r[1:]
        for r in churn_labels(
            con,
            "features",
            stg_transactions="txns",
            stg_balances="balances",
            stg_products="products",
            stg_events="events",
            params=CONFIG.churn_scores,
            snapshot=SNAPSHOT,
        ).fetchall()
    }
    assert rows["drop_70"] == (True, True)  # AUM fell by exactly 70%
    assert rows["drop_69"] == (True, False)
    assert rows["silent"] == (True, True)  # nothing in (T, T + 90]
    assert rows["salary_only"] == (True, True)  # a salary credit is not the customer acting
    assert rows["logs_in"] == (True, False)  # a login on day 90 is activity
    assert rows["never_active"][0] is False  # not a training example


def test_training_features_do_not_see_the_future(small_bank, tmp_path):
    """Features at a past snapshot are the same whether or not later rows exist."""
    config, _, _ = small_bank
    snapshot = date(2026, 5, 31)
    full = duckdb.connect()
    register_staged_views(full, config.paths.staging, config.generate.end_on)
    truncated_staging = tmp_path / "staging"
    shutil.copytree(config.paths.staging, truncated_staging)
    cut = duckdb.connect()
    register_staged_views(cut, truncated_staging, config.generate.end_on)
    for table, column in (
        ("stg_transactions", "transaction_at"),
        ("stg_events", "event_at"),
        ("stg_balances", "balance_on"),
        ("stg_questionnaires", "answered_on"),
    ):
        # replace each history with only its rows dated up to the snapshot
        cut.execute(
            f"create or replace temp table {table}_cut as select * from {table} "
            f"where {column}::date <= DATE '{snapshot}'"
        )
        cut.execute(f"create or replace temp view {table} as select * from {table}_cut")

    def examples(con):
        return training_examples(
            con,
            stg_transactions="stg_transactions",
            sources={
                s: s
                for s in (
                    "stg_customers",
                    "stg_balances",
                    "stg_products",
                    "stg_events",
                    "stg_questionnaires",
                )
            },
            params=CONFIG.churn_scores,
            customer_features_params=CONFIG.customer_features,
            snapshot=snapshot,
        ).drop("is_churned")

    with_future, without_future = examples(full), examples(cut)
    assert len(with_future) > 100
    assert with_future.equals(without_future)


def synthetic(seed: int, n: int = 4_000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[rng.random(n) < 0.05, 2] = np.nan
    y = (2.5 * x[:, 0] + rng.normal(size=n) > 2.5).astype(np.int8)  # only feature 0 matters
    return x, y


def test_reason_codes_name_the_feature_that_drives_the_score():
    x, y = synthetic(1)
    x_calibration, y_calibration = synthetic(2)
    model = fit_churn_model(
        x,
        y,
        x_calibration,
        y_calibration,
        ["outflow", "noise_a", "noise_b"],
        seed=3,
        learning_rate=0.1,
        max_iter=100,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=0.0,
    )
    probability = model.predict(x)
    risky = probability > 0.5
    order, contribution = model.reasons(x[risky])
    assert (order[:, 0] == 0).mean() > 0.95 and (contribution[:, 0] > 0).all()
    assert lift_at(y, probability) > 3
    assert ((contribution[:, 1:] == 0) | (order[:, 1:] >= 0)).all()


def test_fast_reason_codes_equal_the_brute_force_ones(small_bank, monkeypatch):
    """The tree-by-tree reasons (only trees and customers a feature can move) give exactly
    the numbers of one full prediction per neutralised feature, on the sample bank's model
    and across chunk boundaries."""
    import models.churn as churn_module
    from pipeline.artifacts import ArtifactStore

    config, _, _ = small_bank
    model = ArtifactStore(config.paths.models / "churn_scores").versions()[-1].load()
    assert churn_module._TreeScorer.of(model) is not None  # the fast path is the one used
    con = open_catalog(config.paths.warehouse)
    frame = con.sql("select * from customer_features order by customer_id").pl()
    x = feature_matrix(frame, model.features)  # nulls become nan, as in the stage
    assert np.isnan(x).any()  # missing values take the tree's default branch
    monkeypatch.setattr(churn_module, "REASON_CHUNK_ROWS", 128)
    fast, plain = model.reasons(x), model.reasons_plain(x)
    assert np.array_equal(fast[0], plain[0]) and np.array_equal(fast[1], plain[1])
    # the probabilities too: compiled trees score as scikit-learn's predict_proba does
    expected = model.classifier.predict_proba(np.where(model.empty_columns, 0.0, x))[:, 1]
    assert np.array_equal(model.predict(x), expected)
    assert (fast[0][:, 0] >= 0).sum() > len(x) / 2  # most customers have a reason


def test_the_sample_bank_model_beats_the_recency_baseline_out_of_time(small_bank):
    config, _, _ = small_bank
    con = open_catalog(config.paths.warehouse)
    metrics = dict(
        con.sql(
            "select term, value from model_fits where model = 'churn_gbm' and kind = 'metric'"
        ).fetchall()
    )
    assert metrics["roc_auc"] > metrics["baseline_roc_auc"] + 0.05
    assert metrics["pr_auc"] > metrics["baseline_pr_auc"]
    assert metrics["lift_top_decile"] > metrics["baseline_lift_top_decile"]
    assert metrics["calibration_error"] < 0.1
    bands = dict(
        con.sql(
            "select churn_risk_band, max(churn_probability) from churn_scores group by all"
        ).fetchall()
    )
    cuts = {b.code: b.min_probability for b in config.churn_scores.risk_bands}
    assert set(bands) <= set(cuts) and bands["low"] < cuts["medium"]
    explained = con.sql(
        "select count(*) filter (where reason_1 is not null), count(*) "
        "from churn_scores where churn_risk_band in ('high', 'medium')"
    ).fetchall()[0]
    assert explained[0] > 0.9 * explained[1] > 0
    assert con.sql(
        "select count(*) from churn_scores where churn_risk_band = 'low' and reason_1 is not null"
    ).fetchall() == [(0,)]


def test_models_are_reused_between_retrains_and_retrained_on_new_settings(tmp_path, small_bank):
    """Churn and CLV: the second night scores with the first night's fits; new churn settings
    retrain churn only."""
    from pipeline.registry import STAGES
    from pipeline.runner import run_stages
    from tests.conftest import config_for, quiet

    bank, _, _ = small_bank
    config = config_for(tmp_path)
    shutil.copytree(bank.paths.landing, config.paths.landing)
    day = bank.generate.end_on
    run_stages(config, day - timedelta(days=3), list(STAGES), quiet())
    run_stages(config, day, list(STAGES), quiet())
    con = open_catalog(config.paths.warehouse)
    versions = con.sql(
        "select as_of, any_value(model_version), any_value(trained_on) from churn_scores_history "
        "group by all order by as_of"
    ).fetchall()
    assert versions[0][1] == versions[1][1] and versions[1][2] == day - timedelta(days=3)
    clv_fits = con.sql(
        "select as_of, trained_on, value, std_error from model_fits_history "
        "where model = 'bg_nbd' and term in ('r', 'holdout_actual_transactions') "
        "order by term, as_of"
    ).fetchall()
    assert len(clv_fits) == 4 and all(f[1] == day - timedelta(days=3) for f in clv_fits)
    assert clv_fits[0][2:] == clv_fits[1][2:] and clv_fits[2][2:] == clv_fits[3][2:]
    reused, fitted = con.sql(
        "select count(*) filter (where as_of = $day), count(*) filter (where as_of < $day) "
        "from clv_estimates_history where is_modelled",
        params={"day": day},
    ).fetchall()[0]
    assert reused > 0 and fitted > 0
    changed = config.model_copy(
        update={"churn_scores": config.churn_scores.model_copy(update={"horizon_days": 60})}
    )
    run_stages(changed, day, list(STAGES), quiet())
    artifacts = sorted(p.name for p in (config.paths.models / "churn_scores").iterdir())
    assert len(artifacts) == 2 and all(
        a[:10] in (str(day - timedelta(days=3)), str(day)) for a in artifacts
    )
    assert len(list((config.paths.models / "clv_estimates").iterdir())) == 1


def test_banking_value_is_margin_times_expected_relationship():
    from transforms.banking_values import banking_values

    con = duckdb.connect()
    families = ("deposit", "wealth", "fund", "insurance", "loan", "card")
    con.execute(
        "create table features as select * from (values "
        "('stays', 100000.0, 0, 0, 0, 10000.0, 0), ('leaves', 100000.0, 0, 0, 0, 0, 0), "
        "('coin', 100000.0, 0, 0, 0, 0, 0)) t(customer_id, "
        + ", ".join(f"balance_{f}_cny" for f in families)
        + ")"
    )
    con.execute(
        "create table scores as select * from (values ('stays', 0.0), ('leaves', 1.0), "
        "('coin', 0.5)) t(customer_id, churn_probability)"
    )
    params = CONFIG.banking_values.model_copy(update={"discount_rate": 0.0})
    rows = {
        r[0]: r[2:]
        for r in banking_values(
            con,
            customer_features="features",
            churn_scores="scores",
            params=params,
            churn_scores_params=CONFIG.churn_scores,
            as_of=SNAPSHOT,
        ).fetchall()
    }
    period = CONFIG.churn_scores.horizon_days / 365.25
    periods = round(params.horizon_years / period)
    margin, _, years, value = rows["stays"]
    assert float(margin) == 100000 * 0.015 + 10000 * 0.025  # deposit and loan margins
    assert years == pytest.approx(periods * period)  # never leaves: the whole horizon
    assert float(value) == pytest.approx(float(margin) * periods * period, abs=0.01)
    assert rows["leaves"][2] == 0 and float(rows["leaves"][3]) == 0
    assert rows["coin"][2] == pytest.approx(period * (1 - 0.5**periods))  # sum of 0.5^k


def test_training_sample_narrows_every_source_to_the_same_seeded_customers(small_bank):
    """The sampled training path gives each sampled customer exactly the examples the full
    path gives him; the sample is the same for the same seed; max_rows caps a snapshot."""
    config, _, _ = small_bank
    con = duckdb.connect()
    register_staged_views(con, config.paths.staging, config.generate.end_on)
    sources = feature_sources(
        "stg_customers", "stg_balances", "stg_products", "stg_events", "stg_questionnaires"
    )

    def sample(seed, customers=200):
        return training_sample(
            con,
            stg_transactions="stg_transactions",
            sources=sources,
            customers=customers,
            seed=seed,
            name="sample",
        )

    def customers_in(table):
        return {r[0] for r in con.sql(f"select distinct customer_id from {table}").fetchall()}

    def examples(transactions, staged, max_rows=None):
        return training_examples(
            con,
            stg_transactions=transactions,
            sources=staged,
            params=CONFIG.churn_scores,
            customer_features_params=CONFIG.customer_features,
            snapshot=date(2026, 5, 31),
            max_rows=max_rows,
        )

    full = examples("stg_transactions", sources)
    with sample(42) as (stg_transactions, narrowed):
        chosen = customers_in("sample_customers")
        assert len(chosen) == 200
        for table in (stg_transactions, *(narrowed[s] for s in sources if s != "stg_products")):
            seen = customers_in(table)
            assert seen <= chosen and len(seen) > 100, table
        assert narrowed["stg_products"] == "stg_products"
        sampled = examples(stg_transactions, narrowed)
    assert len(sampled) > 100
    assert sampled.equals(full.filter(full["customer_id"].is_in(list(chosen))))
    # the temp tables are gone after the block; the same seed picks the same customers
    assert not con.sql("select * from duckdb_tables() where table_name like 'sample_%'").fetchall()
    with sample(42):
        assert customers_in("sample_customers") == chosen
    with sample(7):
        assert customers_in("sample_customers") != chosen
    # at least as many customers as asked for: the inputs come back unchanged
    with sample(42, customers=10**6) as unchanged:
        assert unchanged == ("stg_transactions", sources)

    capped = examples("stg_transactions", sources, max_rows=50)
    assert len(capped) == 50 and capped["customer_id"].is_sorted()
    assert capped.equals(full.filter(full["customer_id"].is_in(capped["customer_id"].to_list())))
    assert capped.equals(examples("stg_transactions", sources, max_rows=50))
