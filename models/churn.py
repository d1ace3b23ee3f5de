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
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads


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
        probability, best first; contribution <= 0 means no feature raised it (index -1).

        The same numbers as reasons_plain, computed with less work: setting feature j to its
        median changes a tree's leaf only if the tree splits on j and a split threshold lies
        between the value and the median. So for each feature only those (tree, customer)
        pairs are evaluated again; the other trees' leaves are reused and every raw score is
        summed in the booster's own order, which keeps the probabilities bit-identical."""
        scorer = _TreeScorer.of(self)
        if scorer is None:
            return self.reasons_plain(x, top)
        x = _fill_empty(np.ascontiguousarray(x, dtype=np.float64), self.empty_columns)
        contributions = np.zeros((len(x), len(self.features)))
        for start in range(0, len(x), REASON_CHUNK_ROWS):
            rows = x[start : start + REASON_CHUNK_ROWS]
            leaves = scorer.leaves(rows)  # trees x rows
            base = scorer.probability(leaves)
            for j, median in enumerate(self.medians):
                thresholds = scorer.thresholds[j]
                if not len(thresholds):
                    continue  # no tree splits on it: no customer's probability moves
                # cells: how many of the feature's thresholds lie below the value (nan: -1)
                value = rows[:, j]
                cell = np.where(
                    np.isnan(value), -1, np.searchsorted(thresholds, value, side="left")
                )
                median_cell = np.searchsorted(thresholds, median, side="left")
                moved = np.flatnonzero(cell != median_cell)
                if not len(moved):
                    continue
                neutral = rows[moved]  # fancy indexing: a copy
                neutral[:, j] = median
                changed = leaves.take(moved, axis=1)
                for tree in scorer.trees_using[j]:
                    changed[tree] = scorer.tree_leaves(tree, neutral)
                block = contributions[start : start + len(rows), j]
                block[moved] = base[moved] - scorer.probability(changed)
        return _top(contributions, top)

    def reasons_plain(self, x: np.ndarray, top: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """reasons by brute force: one full prediction per feature set to its median."""
        base = self.predict(x)
        contributions = np.empty((len(x), len(self.features)))
        for j in range(len(self.features)):
            neutral = x.copy()
            neutral[:, j] = self.medians[j]
            contributions[:, j] = base - self.predict(neutral)
        return _top(contributions, top)


REASON_CHUNK_ROWS = 50_000  # leaves of one chunk: trees x rows doubles (300 x 50k = 120 MB)


def _top(contributions: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :top]
    values = np.take_along_axis(contributions, order, axis=1)
    order = np.where(values > 0, order, -1)
    return order, np.where(values > 0, values, 0.0)


@dataclass
class _TreeScorer:
    """The calibrated booster taken apart, tree by tree (scikit-learn's HistGradientBoosting
    and CalibratedClassifierCV internals; of() returns None when they are not as expected, and
    a test checks the result against reasons_plain)."""

    booster: HistGradientBoostingClassifier
    calibrators: list
    trees: list
    trees_using: list[np.ndarray]  # per feature: the trees splitting on it
    thresholds: list[np.ndarray]  # per feature: its split thresholds, sorted
    known_categories: tuple  # what TreePredictor.predict needs besides the rows

    @classmethod
    def of(cls, model: ChurnModel) -> _TreeScorer | None:
        try:
            calibrated = model.classifier.calibrated_classifiers_
            booster = calibrated[0].estimator.estimator
            trees = [iteration[0] for iteration in booster._predictors]
            if booster.n_trees_per_iteration_ != 1 or booster.is_categorical_ is not None:
                return None
            calibrators = [c.calibrators[0] for c in calibrated]
            bitsets, feature_map = booster._bin_mapper.make_known_categories_bitsets()
        except (AttributeError, IndexError, TypeError):
            return None
        using: list[list[int]] = [[] for _ in model.features]
        thresholds: list[list[float]] = [[] for _ in model.features]
        for number, tree in enumerate(trees):
            splits = tree.nodes[tree.nodes["is_leaf"] == 0]
            for j in np.unique(splits["feature_idx"]):
                using[j].append(number)
                thresholds[j] += splits["num_threshold"][splits["feature_idx"] == j].tolist()
        return cls(
            booster,
            calibrators,
            trees,
            [np.array(t, dtype=int) for t in using],
            [np.unique(t) for t in thresholds],
            (bitsets, feature_map),
        )

    def tree_leaves(self, tree: int, x: np.ndarray) -> np.ndarray:
        return self.trees[tree].predict(
            x, *self.known_categories, n_threads=_openmp_effective_n_threads()
        )

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """trees x rows: each tree's leaf value for each row."""
        leaves = np.empty((len(self.trees), len(x)))
        for tree in range(len(self.trees)):
            leaves[tree] = self.tree_leaves(tree, x)
        return leaves

    def probability(self, leaves: np.ndarray) -> np.ndarray:
        """The calibrated probability from the leaves, as predict_proba computes it: the
        baseline plus each tree in order, then each calibrator, averaged."""
        raw = np.zeros(leaves.shape[1]) + self.booster._baseline_prediction[0]
        for tree_leaves in leaves:
            raw += tree_leaves
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
