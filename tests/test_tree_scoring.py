"""Compiled trees (models/tree_scoring.py) give scikit-learn's raw scores bit for bit: on
missing values, infinities and values exactly at a split threshold; with one feature set to
another value; and they decline what they cannot represent."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from models.tree_scoring import MAX_LEAVES, CompiledTrees


def _data(rows: int = 4000, features: int = 6, seed: int = 7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    x[:, 2] = rng.integers(0, 5, rows)  # few distinct values: many rows exactly at thresholds
    x[rng.random((rows, features)) < 0.08] = np.nan  # missing values in every feature
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 2]) / 2 + rng.normal(size=rows) > 1).astype(
        int
    )
    return x, y


def _edge_rows(booster, x: np.ndarray) -> np.ndarray:
    """Rows whose values sit exactly on the trees' thresholds, just beside them, at the
    infinities and missing: where a wrong comparison would send a row the other way."""
    thresholds = {}
    for iteration in booster._predictors:
        nodes = iteration[0].nodes
        for node in nodes[nodes["is_leaf"] == 0]:
            thresholds.setdefault(int(node["feature_idx"]), []).append(node["num_threshold"])
    rows = np.repeat(x[:400], 4, axis=0)
    rng = np.random.default_rng(1)
    for f, values in thresholds.items():
        values = np.array(values)
        picked = rng.choice(values, len(rows))
        kind = rng.integers(0, 5, len(rows))
        rows[:, f] = np.select(
            [kind == 0, kind == 1, kind == 2, kind == 3],
            [picked, np.nextafter(picked, np.inf), np.nextafter(picked, -np.inf), np.inf],
            rows[:, f],
        )
    rows[::7, 0] = -np.inf
    return rows


# each width of leaf mask: trees of up to 16 leaves are scored with 16-bit masks, and so on
WIDTHS = [(2, np.uint16), (15, np.uint16), (31, np.uint32), (MAX_LEAVES, np.uint64)]


@pytest.mark.parametrize("leaves, mask_type", WIDTHS)
def test_raw_scores_equal_scikit_learns_bit_for_bit(leaves, mask_type):
    x, y = _data()
    booster = HistGradientBoostingClassifier(
        max_iter=40, max_leaf_nodes=leaves, min_samples_leaf=5, random_state=0
    ).fit(x, y)
    trees = CompiledTrees.of(booster, x.shape[1])
    assert trees is not None
    assert trees.tables.dtype == mask_type
    rows = np.vstack([x, _edge_rows(booster, x)])
    expected = booster._raw_predict(rows).ravel()
    assert np.array_equal(trees.raw(rows), expected)
    assert np.isnan(rows).any() and np.isinf(rows).any()


def test_a_regressors_trees_compile_too():
    x, y = _data()
    target = y + np.nan_to_num(x[:, 1])
    booster = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, target)
    rows = np.vstack([x, _edge_rows(booster, x)])
    assert np.array_equal(
        CompiledTrees.of(booster, x.shape[1]).raw(rows), booster._raw_predict(rows).ravel()
    )


@pytest.mark.parametrize("leaves, mask_type", WIDTHS[1:])
def test_one_feature_at_another_value_equals_scoring_the_changed_rows(leaves, mask_type):
    x, y = _data()
    x = np.column_stack([x, np.ones(len(x))])  # a constant: no tree splits on it
    booster = HistGradientBoostingClassifier(
        max_iter=60, max_leaf_nodes=leaves, min_samples_leaf=5, random_state=0
    ).fit(x, y)
    trees = CompiledTrees.of(booster, x.shape[1])
    assert trees.tables.dtype == mask_type
    rows = np.vstack([x[:500], _edge_rows(booster, x)[:500]])
    values = np.array([0.0, 0.5, 2.0, -1.0, 0.25, 3.0, 7.0])
    got = trees.raw_with_each_at(rows, values)
    own = booster._raw_predict(rows).ravel()
    for f in range(x.shape[1]):
        changed = rows.copy()
        changed[:, f] = values[f]
        assert np.array_equal(got[:, f], booster._raw_predict(changed).ravel()), f
    assert np.array_equal(got[:, -1], own)  # no tree splits on it: the row's own score
    assert (got[:, :-1] != own[:, None]).any(axis=0).all()  # each other feature moves some


def test_what_cannot_be_compiled_exactly_is_declined():
    x, y = _data()
    too_many = HistGradientBoostingClassifier(
        max_iter=3, max_leaf_nodes=MAX_LEAVES + 30, min_samples_leaf=2, random_state=0
    ).fit(x, y)
    assert max(i[0].get_n_leaf_nodes() for i in too_many._predictors) > MAX_LEAVES
    assert CompiledTrees.of(too_many, x.shape[1]) is None
    categories = np.column_stack([np.nan_to_num(x[:, 2]), x[:, 0]])
    categorical = HistGradientBoostingClassifier(
        max_iter=5, categorical_features=[0], random_state=0
    ).fit(categories, y)
    assert CompiledTrees.of(categorical, 2) is None
    three_classes = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(
        x, y + (np.nan_to_num(x[:, 1]) > 1)
    )
    assert CompiledTrees.of(three_classes, x.shape[1]) is None


def test_propensity_probabilities_equal_predict_proba_compiled_or_not():
    from models.propensity import fit_propensities

    x, y = _data()
    products = np.where(np.arange(len(x)) % 2 == 0, "A", "B")
    names = [f"f{i}" for i in range(x.shape[1])]
    small = {"max_iter": 20, "max_leaf_nodes": 15}
    wide = {"max_iter": 2, "max_leaf_nodes": MAX_LEAVES + 30, "min_samples_leaf": 2}
    for booster, compiled in ((small, True), (wide, False)):
        models = fit_propensities(x, products, y, names, min_acquisitions=5, seed=0, **booster)
        for product in ("A", "B"):
            model = models.models[product]
            assert (CompiledTrees.of(model, x.shape[1]) is not None) == compiled
            assert np.array_equal(models.predict(product, x), model.predict_proba(x)[:, 1])
