"""Churn early warning: a calibrated gradient-boosted classifier, its out-of-time evaluation
against a recency baseline, and per-customer reason codes.

Pure: arrays in, a fitted model, probabilities, metrics and reasons out; no I/O.

Reason codes: for each customer, each feature in turn is set to its training median and the
probability recomputed; the features whose own value raises the probability most (largest
drop when neutralised) are his top reasons. Scored by the booster's trees compiled to leaf
masks (models/tree_scoring.py), bit-identical to scikit-learn's predict_proba.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import average_precision_score, roc_auc_score

from models.tree_scoring import CompiledTrees


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
        x = _fill_empty(x, self.empty_columns)
        scorer = _TreeScorer.of(self)
        if scorer is None:
            return self.classifier.predict_proba(x)[:, 1]
        return scorer.probability(scorer.trees.raw(x))

    def reasons(self, x: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """(feature index, contribution) of the `top` features raising each customer's
        probability, best first; contribution <= 0 means no feature raised it (index -1).

        The same numbers as reasons_plain, computed with less work: with the booster's trees
        compiled to leaf masks (models.tree_scoring), a feature at its median changes one
        table row per customer, in only the trees that split on it, and raw scores are summed
        in the booster's own order, which keeps the probabilities bit-identical."""
        scorer = _TreeScorer.of(self)
        if scorer is None:
            return self.reasons_plain(x, top)
        x = _fill_empty(np.ascontiguousarray(x, dtype=np.float64), self.empty_columns)
        contributions = np.zeros((len(x), len(self.features)))
        for start in range(0, len(x), REASON_CHUNK_ROWS):
            rows = x[start : start + REASON_CHUNK_ROWS]
            base = scorer.probability(scorer.trees.raw(rows))
            neutral = scorer.trees.raw_with_each_at(rows, self.medians)
            neutral = scorer.probability(neutral.ravel()).reshape(neutral.shape)
            contributions[start : start + len(rows)] = base[:, None] - neutral
        return _top(contributions, top)

    def reasons_plain(self, x: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """reasons by brute force: one full prediction per feature set to its median, by
        scikit-learn's own predict_proba."""
        x = _fill_empty(x, self.empty_columns)
        base = self.classifier.predict_proba(x)[:, 1]
        contributions = np.empty((len(x), len(self.features)))
        for j in range(len(self.features)):
            neutral = x.copy()
            neutral[:, j] = self.medians[j]
            contributions[:, j] = base - self.classifier.predict_proba(neutral)[:, 1]
        return _top(contributions, top)


REASON_CHUNK_ROWS = 50_000  # customers explained at a time: their raw scores, rows x features


def _top(contributions: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :top]
    values = np.take_along_axis(contributions, order, axis=1)
    order = np.where(values > 0, order, -1)
    return order, np.where(values > 0, values, 0.0)


@dataclass
class _TreeScorer:
    """The calibrated booster taken apart: its trees compiled (models.tree_scoring) and its
    calibrators (scikit-learn's CalibratedClassifierCV internals). of() returns None when they
    are not as expected, and the model then scores through scikit-learn; tests check both
    give the same numbers."""

    trees: CompiledTrees
    calibrators: list

    @classmethod
    def of(cls, model: ChurnModel) -> _TreeScorer | None:
        try:
            calibrated = model.classifier.calibrated_classifiers_
            booster = calibrated[0].estimator.estimator
            calibrators = [c.calibrators[0] for c in calibrated]
        except (AttributeError, IndexError, TypeError):
            return None
        trees = CompiledTrees.of(booster, len(model.features))
        return None if trees is None else cls(trees, calibrators)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """The calibrated probability from the booster's raw scores, as predict_proba
        computes it: each calibrator, clipped, averaged."""
        mean = np.zeros(len(raw))
        for calibrator in self.calibrators:
            probability = calibrator.predict(raw)
            probability[(probability > 1.0) & (probability <= 1.0 + 1e-5)] = 1.0
            mean += probability
        return mean / len(self.calibrators)


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
