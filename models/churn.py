"""Churn early warning: a calibrated gradient-boosted classifier, its out-of-time evaluation
against a recency baseline, and per-customer reason codes.

Pure: arrays in, a fitted model, probabilities, metrics and reasons out; no I/O.

Reason codes: for each customer, each feature in turn is set to its training median and the
probability recomputed; the features whose own value raises the probability most (largest
drop when neutralised) are his top reasons. Vectorised: one batch prediction per feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import average_precision_score, roc_auc_score


@dataclass
class ChurnModel:
    features: list[str]
    classifier: CalibratedClassifierCV
    medians: np.ndarray
    training_rows: int
    positive_rate: float
    empty_columns: np.ndarray  # features with no value at all in training: held at 0
    metrics: dict[str, float] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(_fill_empty(x, self.empty_columns))[:, 1]

    def reasons(self, x: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(feature index, contribution) of the `top` features raising each customer's
        probability, best first; contribution <= 0 means no feature raised it (index -1)."""
        base = self.predict(x)
        contributions = np.empty((len(x), len(self.features)))
        for j in range(len(self.features)):
            neutral = x.copy()
            neutral[:, j] = self.medians[j]
            contributions[:, j] = base - self.predict(neutral)
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :top]
        values = np.take_along_axis(contributions, order, axis=1)
        order = np.where(values > 0, order, -1)
        return order, np.where(values > 0, values, 0.0)


def _fill_empty(x: np.ndarray, empty: np.ndarray) -> np.ndarray:
    if not empty.any():
        return x
    x = x.copy()
    x[:, empty] = 0.0
    return x


def fit_churn_model(
    x: np.ndarray,
    y: np.ndarray,
    x_calibration: np.ndarray,
    y_calibration: np.ndarray,
    features: list[str],
    *,
    seed: int,
    learning_rate: float,
    max_iter: int,
    max_leaf_nodes: int,
    min_samples_leaf: int,
    l2_regularization: float,
) -> ChurnModel:
    """Boost on (x, y), then calibrate its probabilities (isotonic) on a later, separate
    sample (x_calibration, y_calibration): one booster fit, a time-ordered calibration."""
    for name, labels in (("training", y), ("calibration", y_calibration)):
        if len(np.unique(labels)) < 2:
            raise ValueError(f"churn: the {name} labels hold one class only ({len(labels)})")
    booster = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf,
        l2_regularization=l2_regularization,
        early_stopping=False,
        random_state=seed,
    )
    empty = np.isnan(x).all(axis=0)  # e.g. a 12-month change before 12 months of history
    booster.fit(_fill_empty(x, empty), y)
    classifier = CalibratedClassifierCV(FrozenEstimator(booster), method="isotonic")
    classifier.fit(_fill_empty(x_calibration, empty), y_calibration)
    medians = np.zeros(x.shape[1])
    medians[~empty] = np.nanmedian(x[:, ~empty], axis=0)
    return ChurnModel(features, classifier, medians, len(y), float(y.mean()), empty)


def lift_at(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> float:
    """Churn rate among the top `share` by score, over the overall rate."""
    count = max(1, int(round(len(y) * share)))
    top = np.argsort(-score, kind="stable")[:count]
    return float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan")


def expected_calibration_error(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over equal-width bins, weighted by size."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            error += chosen.mean() * abs(y[chosen].mean() - probability[chosen].mean())
    return float(error)


def evaluate(y: np.ndarray, score: np.ndarray, probability: bool = True) -> dict[str, float]:
    metrics = {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "lift_top_decile": lift_at(y, score),
        "positive_rate": float(y.mean()),
        "examples": float(len(y)),
    }
    if probability:
        metrics["calibration_error"] = expected_calibration_error(y, score)
    return metrics


def lift_table(y: np.ndarray, score: np.ndarray, bins: int = 10) -> list[dict]:
    """Customers ranked by score, in `bins` equal groups: per group its churn rate over the
    overall rate (lift) and the share of all churners found down to it (cumulative gains)."""
    order = np.argsort(-score, kind="stable")
    groups = np.array_split(y[order], bins)
    overall, positives = y.mean(), max(int(y.sum()), 1)
    captured, table = 0, []
    for number, group in enumerate(groups, start=1):
        captured += int(group.sum())
        table.append(
            {
                "decile": number,
                "examples": len(group),
                "churn_rate": float(group.mean()) if len(group) else 0.0,
                "lift": float(group.mean() / overall) if len(group) and overall > 0 else 0.0,
                "cumulative_gain": captured / positives,
            }
        )
    return table


def calibration_table(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> list[dict]:
    """Per bin: mean predicted probability, observed rate, examples (for the calibration plot)."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    return [
        {
            "bin": b,
            "predicted": float(probability[index == b].mean()),
            "observed": float(y[index == b].mean()),
            "examples": int((index == b).sum()),
        }
        for b in range(bins)
        if (index == b).any()
    ]
