"""Product propensity: per product, a gradient-boosted classifier of "acquires it within the
horizon" from point-in-time features. Pure: arrays in, models and probabilities out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier

from models.tree_scoring import CompiledTrees


@dataclass
class PropensityModels:
    features: list[str]
    models: dict[str, HistGradientBoostingClassifier] = field(default_factory=dict)
    acquisitions: dict[str, int] = field(default_factory=dict)  # training positives per product
    examples: dict[str, int] = field(default_factory=dict)
    empty: np.ndarray | None = None  # features with no value in training: held at 0

    def predict(self, product: str, x: np.ndarray) -> np.ndarray | None:
        """The probability of acquiring `product` (None when it has no model): the booster's
        raw score by its compiled trees (models.tree_scoring), through the logistic function,
        as predict_proba computes it; by scikit-learn when the trees cannot be compiled."""
        model = self.models.get(product)
        if model is None:
            return None
        trees = CompiledTrees.of(model, x.shape[1])
        if trees is None:
            return model.predict_proba(x)[:, 1]
        return expit(trees.raw(x))


def fit_propensities(
    x: np.ndarray,
    products: np.ndarray,
    acquired: np.ndarray,
    features: list[str],
    *,
    min_acquisitions: int,
    seed: int,
    **booster: float,
) -> PropensityModels:
    """x: one row per (customer, snapshot, product not held then); acquired: 1 when he held
    it by the end of the horizon. A product with fewer than min_acquisitions gets no model."""
    result = PropensityModels(features)
    for product in sorted(set(products.tolist())):
        rows = products == product
        positives = int(acquired[rows].sum())
        result.acquisitions[product] = positives
        result.examples[product] = int(rows.sum())
        if positives < min_acquisitions or positives == rows.sum():
            continue
        model = HistGradientBoostingClassifier(early_stopping=False, random_state=seed, **booster)
        result.models[product] = model.fit(x[rows], acquired[rows])
    return result
