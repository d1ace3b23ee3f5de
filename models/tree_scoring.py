"""Fitted HistGradientBoosting trees compiled to leaf masks (the QuickScorer method) and scored
by numba kernels: the same raw scores as scikit-learn, bit for bit, several times faster.

Pure: a fitted booster in, arrays out; no I/O.

How it works. The leaves of a tree are numbered left to right. A split "x[f] <= t" that a row
fails (it goes right) rules out every leaf of its left subtree, and a row's leaf is the
leftmost leaf that no failed split rules out. The splits a row fails on feature f are those
with t < x[f]: a prefix of f's thresholds in sorted order. So per feature, and per count of
thresholds below a value (its cell), a table row holds, for every tree, a bit mask of the
leaves still possible (16, 32 or 64 bits, as the widest tree needs); a row's leaves are the
AND of one table row per feature, and each tree's leaf is its lowest bit left. A missing
value fails the splits that send missing values right: one more table row per feature. No
branch depends on the data, so nothing is mispredicted, which is what a tree walk spends
most of its time on.

"The score with feature j at another value" (churn reason codes) is then the AND of every
other feature's row (kept as running products before and after j) with j's row for that
value, in only the trees that split on j.

Exactness: leaves are found exactly; a raw score is the baseline plus each tree's leaf in the
booster's order, as scikit-learn sums it (no fastmath), so the result is bit-identical to
HistGradientBoosting's raw prediction (a test checks it).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numba
import numpy as np

MAX_LEAVES = 64  # leaves per tree that fit in one uint64 mask
# masks as narrow as the widest tree allows: at 15 leaves a uint16 table is a quarter of a
# uint64 one, and scoring 1M customers with a 200-tree model took 0.3 s where it took 0.6 s
_MASK_TYPES = (np.uint16, np.uint32, np.uint64)
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# a lowest set bit times this de Bruijn constant (mod 2**64) has the bit's position's own
# pattern in its top 6 bits: _POSITION reads the position back
_DE_BRUIJN = 0x03F79D71B4CB0A89
_POSITION = np.zeros(64, dtype=np.int64)
for _bit in range(64):
    _POSITION[(((1 << _bit) * _DE_BRUIJN) & int(_ALL)) >> 58] = _bit


@dataclass(frozen=True)
class CompiledTrees:
    """The trees of one booster (one tree per iteration: regression or binary classification),
    in the booster's order. `of` returns None for a booster it cannot represent exactly
    (categorical splits, several trees per iteration, more than MAX_LEAVES leaves)."""

    thresholds: np.ndarray  # every feature's distinct split thresholds, sorted, one after another
    threshold_start: np.ndarray  # feature f's are thresholds[threshold_start[f]:...[f + 1]]
    table_start: np.ndarray  # feature f's first row in tables
    tables: np.ndarray  # rows x trees leaf masks: per feature, its cells then missing
    leaf_values: np.ndarray  # trees x MAX_LEAVES: the raw value of each leaf
    using_start: np.ndarray  # the trees splitting on feature f: using[using_start[f]:...]
    using: np.ndarray
    baseline: float  # the raw score before the first tree

    @classmethod
    def of(cls, booster, n_features: int) -> CompiledTrees | None:
        """The booster compiled (once per fitted booster: kept while the booster lives)."""
        if booster in _COMPILED:
            return _COMPILED[booster]
        compiled = cls._compile(booster, n_features)
        if compiled is not None:
            _COMPILED[booster] = compiled
        return compiled

    @classmethod
    def _compile(cls, booster, n_features: int) -> CompiledTrees | None:
        try:
            if booster.n_trees_per_iteration_ != 1 or booster.is_categorical_ is not None:
                return None
            trees = [iteration[0] for iteration in booster._predictors]
            baseline = float(np.ravel(booster._baseline_prediction)[0])
        except (AttributeError, IndexError, TypeError):
            return None
        widest = max((tree.get_n_leaf_nodes() for tree in trees), default=1)
        if widest > MAX_LEAVES:
            return None
        mask_type = next(t for t in _MASK_TYPES if np.iinfo(t).bits >= widest)
        leaf_values = np.zeros((len(trees), MAX_LEAVES))
        # per feature: (threshold, tree, leaves still possible when failed, missing goes left)
        splits: list[list[tuple[float, int, int, bool]]] = [[] for _ in range(n_features)]
        for number, tree in enumerate(trees):
            leaves, tree_splits = _leaves_and_splits(tree.nodes)
            leaf_values[number, : len(leaves)] = tree.nodes["value"][leaves]
            for feature, threshold, possible, missing_goes_left in tree_splits:
                splits[feature].append((threshold, number, possible, missing_goes_left))
        thresholds, tables, using = [], [], []
        for feature_splits in splits:
            feature_splits.sort(key=lambda split: split[0])
            distinct = np.unique([split[0] for split in feature_splits])
            table = np.full((len(distinct) + 2, len(trees)), _ALL, dtype=np.uint64)
            possible = np.full(len(trees), _ALL, dtype=np.uint64)
            done = 0
            for cell, threshold in enumerate(distinct):
                table[cell] = possible  # cell: this many thresholds lie below the value
                while done < len(feature_splits) and feature_splits[done][0] == threshold:
                    _, tree, mask, _ = feature_splits[done]
                    possible[tree] &= np.uint64(mask)
                    done += 1
            table[len(distinct)] = possible
            for _, tree, mask, missing_goes_left in feature_splits:
                if not missing_goes_left:
                    table[-1, tree] &= np.uint64(mask)
            thresholds.append(distinct)
            tables.append(table)
            using.append(np.unique([split[1] for split in feature_splits]).astype(np.int64))
        return cls(
            thresholds=np.concatenate(thresholds).astype(np.float64),
            threshold_start=_starts(thresholds),
            table_start=_starts(tables)[:-1],
            # every leaf number is below `widest`: the narrower type keeps all of its bits
            tables=np.concatenate(tables).astype(mask_type),
            leaf_values=leaf_values,
            using_start=_starts(using),
            using=np.concatenate(using),
            baseline=baseline,
        )

    def _arrays(self) -> tuple:
        return (
            self.thresholds,
            self.threshold_start,
            self.table_start,
            self.tables,
            # per tree, a mask with every leaf possible, in the tables' type
            np.full(self.tables.shape[1], np.iinfo(self.tables.dtype).max, self.tables.dtype),
            self.leaf_values,
            _POSITION,
            self.baseline,
        )

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The booster's raw score per row (its _raw_predict), bit for bit."""
        return _raw(_rows(x), *self._arrays())

    def raw_with_each_at(self, x: np.ndarray, values: np.ndarray) -> np.ndarray:
        """rows x features: the raw score with feature j set to values[j] (the others as they
        are); where that changes no tree's leaf, exactly the row's own raw score."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        return _raw_with_each_at(_rows(x), values, self.using_start, self.using, *self._arrays())


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _leaves_and_splits(nodes: np.ndarray) -> tuple[list[int], list[tuple[int, float, int, bool]]]:
    """A tree's leaves (node ids, left to right) and its splits: (feature, threshold, the
    leaves still possible when a row fails it, as a mask; whether missing values go left)."""
    leaves: list[int] = []
    splits: list[tuple[int, float, int, bool]] = []

    def visit(node: int) -> list[int]:  # the leaf numbers under node
        if nodes["is_leaf"][node]:
            leaves.append(node)
            return [len(leaves) - 1]
        left = visit(int(nodes["left"][node]))
        right = visit(int(nodes["right"][node]))
        ruled_out = sum(1 << leaf for leaf in left)
        splits.append(
            (
                int(nodes["feature_idx"][node]),
                float(nodes["num_threshold"][node]),
                ~ruled_out & int(_ALL),
                bool(nodes["missing_go_to_left"][node]),
            )
        )
        return left + right

    visit(0)
    return leaves, splits


def _starts(parts: list[np.ndarray]) -> np.ndarray:
    return np.cumsum([0, *(len(part) for part in parts)]).astype(np.int64)


def _rows(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


@numba.njit(cache=True, inline="always")
def _cell_row(value, thresholds, threshold_start, table_start, feature):
    """The table row of a value of `feature`: its cell, or the missing row."""
    first, end = threshold_start[feature], threshold_start[feature + 1]
    if np.isnan(value):
        return table_start[feature] + end - first + 1
    return table_start[feature] + np.searchsorted(thresholds[first:end], value, side="left")


@numba.njit(cache=True, inline="always")
def _leaf_value(mask, tree, leaf_values, position):
    mask = np.uint64(mask)
    lowest = mask & (~mask + np.uint64(1))
    return leaf_values[tree, position[(lowest * np.uint64(0x03F79D71B4CB0A89)) >> np.uint64(58)]]


@numba.njit(parallel=True, cache=True)
def _raw(
    x, thresholds, threshold_start, table_start, tables, every_leaf, leaf_values, position, baseline
):
    rows, features = x.shape
    trees = tables.shape[1]
    out = np.empty(rows)
    for i in numba.prange(rows):
        mask = every_leaf.copy()
        for f in range(features):
            if threshold_start[f + 1] == threshold_start[f]:
                continue  # no tree splits on it
            row = _cell_row(x[i, f], thresholds, threshold_start, table_start, f)
            for t in range(trees):
                mask[t] &= tables[row, t]
        raw = baseline
        for t in range(trees):
            raw += _leaf_value(mask[t], t, leaf_values, position)
        out[i] = raw
    return out


@numba.njit(parallel=True, cache=True)
def _raw_with_each_at(
    x,
    values,
    using_start,
    using,
    thresholds,
    threshold_start,
    table_start,
    tables,
    every_leaf,
    leaf_values,
    position,
    baseline,
):
    rows, features = x.shape
    trees = tables.shape[1]
    out = np.empty((rows, features))
    for i in numba.prange(rows):
        own_rows = np.empty(features, dtype=np.int64)
        # after[f]: the AND of the masks of the features after f
        after = np.empty((features + 1, trees), dtype=tables.dtype)
        after[features, :] = every_leaf
        for f in range(features - 1, -1, -1):
            after[f, :] = after[f + 1, :]
            if threshold_start[f + 1] == threshold_start[f]:
                continue
            own_rows[f] = _cell_row(x[i, f], thresholds, threshold_start, table_start, f)
            for t in range(trees):
                after[f, t] &= tables[own_rows[f], t]
        leaves = np.empty(trees)
        raw = baseline
        for t in range(trees):
            leaves[t] = _leaf_value(after[0, t], t, leaf_values, position)
            raw += leaves[t]
        before = every_leaf.copy()
        changed = leaves.copy()
        for f in range(features):
            out[i, f] = raw
            if threshold_start[f + 1] == threshold_start[f]:
                continue
            other_row = _cell_row(values[f], thresholds, threshold_start, table_start, f)
            if other_row != own_rows[f]:
                moved = False
                for k in range(using_start[f], using_start[f + 1]):
                    t = using[k]
                    mask = before[t] & after[f + 1, t] & tables[other_row, t]
                    changed[t] = _leaf_value(mask, t, leaf_values, position)
                    moved = moved or changed[t] != leaves[t]
                if moved:
                    neutral = baseline
                    for t in range(trees):
                        neutral += changed[t]
                    out[i, f] = neutral
                for k in range(using_start[f], using_start[f + 1]):
                    changed[using[k]] = leaves[using[k]]
            for t in range(trees):
                before[t] &= tables[own_rows[f], t]
    return out
