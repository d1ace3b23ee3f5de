"""BG/NBD and Gamma-Gamma: the fitters recover known parameters from data simulated from the
models, the forecast matches simulated holdout behaviour, and bad data is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from models.clv import (
    ClvFitError,
    bgnbd_expected_transactions,
    bgnbd_p_alive,
    fit_bgnbd,
    fit_gamma_gamma,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

TRUE_BGNBD = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
TRUE_GAMMA_GAMMA = {"p": 6.0, "q": 4.0, "gamma": 15.0}


@pytest.fixture(scope="module")
def simulated():
    age = np.random.default_rng(0).uniform(30, 80, 8_000)
    return simulate_bgnbd(*TRUE_BGNBD.values(), age, seed=1, holdout=26)


def test_bgnbd_recovers_known_parameters_with_honest_standard_errors(simulated):
    x, t_x, age, _ = simulated
    fit = fit_bgnbd(x, t_x, age)
    for name, truth in TRUE_BGNBD.items():
        estimate, error = fit.params[name], fit.std_errors[name]
        assert error is not None and error > 0, name
        assert abs(estimate - truth) < 3.5 * error, (name, estimate, truth, error)
    assert fit.customers == len(x) and np.isfinite(fit.log_likelihood)


def test_bgnbd_forecast_matches_the_simulated_holdout(simulated):
    x, t_x, age, later = simulated
    fit = fit_bgnbd(x, t_x, age)
    predicted = bgnbd_expected_transactions(fit.vector(), 26, x, t_x, age)
    assert predicted.sum() == pytest.approx(later.sum(), rel=0.05)
    for repeat in (0, 1, 2):  # conditional on history, too
        chosen = x == repeat
        assert predicted[chosen].mean() == pytest.approx(later[chosen].mean(), rel=0.15, abs=0.02)


def test_p_alive_reads_the_history():
    params = np.array(list(TRUE_BGNBD.values()))
    p_alive = bgnbd_p_alive(params, x=[0, 10, 10], t_x=[0, 50, 5], T=[52, 52, 52])
    assert p_alive[0] == 1.0  # no repeat: never seen to leave
    assert p_alive[1] > 0.9 > 0.1 > p_alive[2]  # frequent buyer, recently vs long ago
    expected = bgnbd_expected_transactions(params, 52, [10, 10], [50, 5], [52, 52])
    assert expected[0] > 5 * expected[1]


def test_gamma_gamma_recovers_known_parameters():
    x = np.random.default_rng(3).integers(1, 12, 6_000).astype(float)
    m = simulate_gamma_gamma(*TRUE_GAMMA_GAMMA.values(), x, seed=4)
    fit = fit_gamma_gamma(x, m)
    for name, truth in TRUE_GAMMA_GAMMA.items():
        estimate, error = fit.params[name], fit.std_errors[name]
        assert error is not None and abs(estimate - truth) < 3.5 * error, (name, estimate)


def test_too_little_data_is_refused_with_the_reason():
    with pytest.raises(ClvFitError, match="at least 30 customers with a repeat"):
        fit_bgnbd(np.zeros(100), np.zeros(100), np.full(100, 10.0))
    with pytest.raises(ClvFitError, match="0 <= t_x <= T"):
        fit_bgnbd(np.ones(40), np.full(40, 11.0), np.full(40, 10.0))
    with pytest.raises(ClvFitError, match="gamma_gamma"):
        fit_gamma_gamma(np.ones(5), np.ones(5))


def test_clv_stage_on_the_sample_bank(small_bank):
    from pipeline.warehouse import open_catalog

    config, _, _ = small_bank
    con = open_catalog(config.paths.warehouse)
    modelled, p_min, p_max, clv_min, customers = con.sql(
        "select count(*) filter (where is_modelled), min(p_alive), max(p_alive), min(clv_cny), "
        "count(*) from clv_estimates"
    ).fetchall()[0]
    assert modelled > 0.8 * customers and 0 <= p_min <= p_max <= 1 and clv_min >= 0
    terms = dict(
        con.sql(
            "select model || '.' || term, std_error from model_fits where stage = 'clv_estimates'"
        ).fetchall()
    )
    assert all(terms[f"bg_nbd.{p}"] is not None for p in TRUE_BGNBD)
    assert "bg_nbd.holdout_actual_transactions" in terms and "gamma_gamma.q" in terms
    predicted, actual = (
        con.sql(f"select value from model_fits where model = 'bg_nbd' and term = '{t}'").fetchall()[
            0
        ][0]
        for t in ("holdout_predicted_transactions", "holdout_actual_transactions")
    )
    assert predicted == pytest.approx(actual, rel=0.25)  # the sample bank is not the model
    linked = con.sql(
        "select count(*) from segments s join clv_estimates c using (customer_id) "
        "where s.clv_cny is not distinct from c.clv_cny"
    ).fetchall()[0][0]
    assert linked == customers
