"""Customer lifetime value: BG/NBD (Fader, Hardie & Lee 2005) for how many transactions a
customer will make and whether he is still "alive", Gamma-Gamma (Fader, Hardie & Lee 2005,
"RFM and CLV") for the value of each. Fitted by maximum likelihood with scipy.

Pure: arrays in, parameters and predictions out. Per customer, in the chosen time unit:
    x    repeat transactions (distinct transaction days after the first one)
    t_x  time from the first to the last transaction (0 when x = 0)
    T    time from the first transaction to the end of the calibration period
    m    mean value of the repeat transactions (Gamma-Gamma uses customers with x >= 1)

Robustness: parameters are fitted as logarithms (always positive) within bounds, the
log-likelihood is evaluated in log space (gammaln, logaddexp), identical (x, t_x, T) rows are
fitted once with a weight, the start values come from the data, and standard errors come from
the inverse of a numerical Hessian (delta method back to the parameters). A fit that does not
converge, or data without enough repeat buyers, raises ClvFitError with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

BGNBD_PARAMS = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS = ("p", "q", "gamma")
LOG_BOUNDS = (-12.0, 12.0)


class ClvFitError(ValueError):
    """The data cannot support the fit (too few repeat buyers, no convergence)."""


@dataclass(frozen=True)
class MaximumLikelihoodFit:
    model: str
    params: dict[str, float]
    std_errors: dict[str, float | None]
    log_likelihood: float
    customers: int
    iterations: int

    def vector(self) -> np.ndarray:
        return np.array(list(self.params.values()))


# --- BG/NBD ------------------------------------------------------------------------------------


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer log-likelihood, eq. (6) of Fader, Hardie & Lee (2005), in log space."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    beta_part = betaln(a, b + x) - betaln(a, b)
    still_alive = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        died = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
        # the "died" term's B(a + 1, b + x - 1) / B(a, b) is B(a, b + x) / B(a, b) (beta_part)
        # times a / (b + x - 1), which `died` carries
    return common + beta_part + np.logaddexp(still_alive, died)


def _fit(
    model: str,
    names: tuple[str, ...],
    negative_ll,
    start: np.ndarray,
    customers: int,
) -> MaximumLikelihoodFit:
    result = minimize(
        negative_ll,
        np.log(start),
        method="L-BFGS-B",
        bounds=[LOG_BOUNDS] * len(start),
        options={"maxiter": 2_000},
    )
    if not result.success or not np.isfinite(result.fun):
        raise ClvFitError(f"{model}: the maximum-likelihood fit did not converge: {result.message}")
    estimate = np.exp(result.x)
    at_bound = np.isclose(result.x, LOG_BOUNDS[0]) | np.isclose(result.x, LOG_BOUNDS[1])
    errors = _standard_errors(negative_ll, result.x)
    return MaximumLikelihoodFit(
        model=model,
        params={n: float(v) for n, v in zip(names, estimate, strict=True)},
        std_errors={
            n: (None if (e is None or bound) else float(v * e))
            for n, v, e, bound in zip(names, estimate, errors, at_bound, strict=True)
        },
        log_likelihood=float(-result.fun),
        customers=customers,
        iterations=int(result.nit),
    )


def _standard_errors(negative_ll, log_params: np.ndarray) -> list[float | None]:
    """Standard errors of the log-parameters from a central-difference Hessian."""
    k = len(log_params)
    step = 1e-4
    hessian = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            e_i, e_j = np.eye(k)[i] * step, np.eye(k)[j] * step
            value = (
                negative_ll(log_params + e_i + e_j)
                - negative_ll(log_params + e_i - e_j)
                - negative_ll(log_params - e_i + e_j)
                + negative_ll(log_params - e_i - e_j)
            ) / (4 * step * step)
            hessian[i, j] = hessian[j, i] = value
    try:
        covariance = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return [None] * k
    variances = np.diag(covariance)
    return [float(np.sqrt(v)) if np.isfinite(v) and v > 0 else None for v in variances]


def _compress(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Identical rows once, with their count as weight."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(np.float64)


def fit_bgnbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, min_repeat_customers: int = 30
) -> MaximumLikelihoodFit:
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if len(x) == 0 or (x > 0).sum() < min_repeat_customers:
        raise ClvFitError(
            f"bg_nbd: needs at least {min_repeat_customers} customers with a repeat transaction, "
            f"found {int((x > 0).sum())} of {len(x)}"
        )
    if (t_x > T).any() or (T <= 0).any() or (x < 0).any():
        raise ClvFitError("bg_nbd: inputs must satisfy 0 <= t_x <= T, T > 0 and x >= 0")
    (ux, ut, uT), weights = _compress(x, t_x, T)

    def negative_ll(log_params: np.ndarray) -> float:
        value = -(weights * bgnbd_log_likelihood(np.exp(log_params), ux, ut, uT)).sum()
        return float(value) if np.isfinite(value) else 1e300

    rate = max(x.sum() / T.sum(), 1e-6)
    return _fit("bg_nbd", BGNBD_PARAMS, negative_ll, np.array([1.0, 1.0 / rate, 1.0, 3.0]), len(x))


def bgnbd_p_alive(params: np.ndarray, x, t_x, T) -> np.ndarray:
    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    with np.errstate(divide="ignore", over="ignore"):
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(log_odds)), 1.0)


def bgnbd_expected_transactions(params: np.ndarray, horizon: float, x, t_x, T) -> np.ndarray:
    """E[transactions in (T, T + horizon] | x, t_x, T], eq. (10) of the paper."""
    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if np.isclose(a, 1.0):
        a = 1.0 + 1e-9  # the closed form has a removable singularity at a = 1
    z = horizon / (alpha + T + horizon)
    hyper = hyp2f1(r + x, b + x, a + b + x - 1, z)
    numerator = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - np.exp((r + x) * np.log((alpha + T) / (alpha + T + horizon))) * hyper)
    )
    with np.errstate(divide="ignore", over="ignore"):
        odds = np.where(
            x > 0,
            a
            / np.maximum(b + x - 1, 1e-300)
            * np.exp((r + x) * np.log((alpha + T) / (alpha + t_x))),
            0.0,
        )
    return numerator / (1 + odds)


def simulate_bgnbd(
    r: float, alpha: float, a: float, b: float, T: np.ndarray, seed: int, holdout: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T, transactions in the holdout (T, T + holdout]) drawn from the model itself,
    for recovery and forecast tests. Vectorised across customers; loops over transaction
    rounds only (a handful for realistic parameters)."""
    rng = np.random.default_rng(seed)
    T = np.asarray(T, dtype=np.float64)
    n = len(T)
    rate = rng.gamma(r, 1 / alpha, n)
    dropout = rng.beta(a, b, n)
    x, t_x, later, clock = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        clock[active] += rng.exponential(1 / rate[active])
        bought = active & (clock <= T)
        x[bought] += 1
        t_x[bought] = clock[bought]
        in_holdout = active & (clock > T) & (clock <= T + holdout)
        later[in_holdout] += 1
        active = (bought | in_holdout) & (rng.random(n) >= dropout)  # he may leave after each
    return x, t_x, T, later


# --- Gamma-Gamma -------------------------------------------------------------------------------


def gamma_gamma_log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, gamma = params
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(gamma)
        + (p * x - 1) * np.log(m)
        + (p * x) * np.log(x)
        - (p * x + q) * np.log(gamma + x * m)
    )


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, min_customers: int = 30) -> MaximumLikelihoodFit:
    x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    keep = (x > 0) & (m > 0)
    if keep.sum() < min_customers:
        raise ClvFitError(
            f"gamma_gamma: needs at least {min_customers} customers with repeat transactions of "
            f"positive value, found {int(keep.sum())}"
        )
    x, m = x[keep], m[keep]

    def negative_ll(log_params: np.ndarray) -> float:
        value = -gamma_gamma_log_likelihood(np.exp(log_params), x, m).sum()
        return float(value) if np.isfinite(value) else 1e300

    # moments: spend per transaction ~ Gamma(p, nu), nu ~ Gamma(q, gamma); start near them
    start = np.array([2.0, 3.0, 2.0 * np.mean(m)])
    return _fit("gamma_gamma", GAMMA_GAMMA_PARAMS, negative_ll, start, len(x))


def gamma_gamma_expected_value(params: np.ndarray, x, m) -> np.ndarray:
    """E[value of a transaction | x, m]; the population mean for a customer with x = 0."""
    p, q, gamma = params
    x, m = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    if q <= 1:
        raise ClvFitError(f"gamma_gamma: q = {q:.3f} <= 1, the expected value is undefined")
    population = p * gamma / (q - 1)
    individual = (gamma + m * x) * p / (p * x + q - 1)
    return np.where(x > 0, individual, population)


def simulate_gamma_gamma(p: float, q: float, gamma: float, x: np.ndarray, seed: int) -> np.ndarray:
    """Mean transaction value per customer with x transactions, drawn from the model."""
    rng = np.random.default_rng(seed)
    nu = rng.gamma(q, 1 / gamma, len(x))
    total = rng.gamma(p * np.maximum(x, 1), 1 / nu)  # sum of x Gamma(p, nu) values
    return total / np.maximum(x, 1)
