"""Exact association rules over product holdings (customer = basket, product = item).

Pure. Baskets arrive compressed: each distinct set of products held, as a bitmask, with the
number of customers holding exactly that set. Support of an itemset S is then the weighted
count of baskets b with b & S == S: exact, and the work grows with the number of distinct
baskets (thousands), not customers (millions). Itemsets are grown level by level (Apriori:
a candidate of size k+1 is kept only if all its k-subsets are frequent), with no length limit
unless one is given. Rules have one product on the right-hand side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITEMS = 63  # bitmasks are unsigned 64-bit integers


@dataclass(frozen=True)
class Rule:
    antecedent: tuple[int, ...]  # item indexes, ascending
    consequent: int
    antecedent_count: float
    both_count: float
    consequent_count: float
    baskets: float

    @property
    def support(self) -> float:
        return self.both_count / self.baskets

    @property
    def confidence(self) -> float:
        return self.both_count / self.antecedent_count

    @property
    def lift(self) -> float:
        return self.confidence / (self.consequent_count / self.baskets)


def items_of(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(MAX_ITEMS) if mask >> i & 1)


def _support(masks: np.ndarray, weights: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Weighted count of baskets containing each candidate, in blocks to bound memory."""
    counts = np.empty(len(candidates))
    block = max(1, 2_000_000 // max(len(masks), 1))
    for start in range(0, len(candidates), block):
        chunk = candidates[start : start + block]
        contains = (masks[None, :] & chunk[:, None]) == chunk[:, None]
        counts[start : start + block] = contains @ weights
    return counts


def frequent_itemsets(
    masks: np.ndarray,
    weights: np.ndarray,
    items: int,
    min_count: float,
    max_length: int | None = None,
) -> dict[int, float]:
    """Every itemset (as a bitmask) held by at least min_count customers -> that count."""
    if items > MAX_ITEMS:
        raise ValueError(f"association rules handle at most {MAX_ITEMS} products, got {items}")
    masks = np.asarray(masks, dtype=np.uint64)
    weights = np.asarray(weights, dtype=np.float64)
    singles = np.array([1 << i for i in range(items)], dtype=np.uint64)
    counts = _support(masks, weights, singles)
    frequent = {int(s): float(c) for s, c in zip(singles, counts, strict=True) if c >= min_count}
    level = sorted(frequent)
    size = 1
    while level and (max_length is None or size < max_length):
        known = set(level)
        candidates = set()
        for itemset in level:
            top = itemset.bit_length() - 1
            for item in range(top + 1, items):
                candidate = itemset | 1 << item
                if 1 << item in frequent and all(
                    candidate ^ 1 << i in known for i in items_of(candidate)
                ):
                    candidates.add(candidate)
        if not candidates:
            break
        ordered = np.array(sorted(candidates), dtype=np.uint64)
        counts = _support(masks, weights, ordered)
        level = [int(c) for c, n in zip(ordered, counts, strict=True) if n >= min_count]
        frequent.update(
            {int(c): float(n) for c, n in zip(ordered, counts, strict=True) if n >= min_count}
        )
        size += 1
    return frequent


def mine_rules(
    masks: np.ndarray,
    weights: np.ndarray,
    items: int,
    *,
    min_support: float,
    min_confidence: float,
    max_length: int | None = None,
) -> list[Rule]:
    """Rules X -> y with support(X + y) >= min_support and confidence >= min_confidence, for
    every frequent itemset X + y of at most max_length items (None: no limit)."""
    baskets = float(np.sum(weights))
    if baskets == 0:
        return []
    frequent = frequent_itemsets(masks, weights, items, min_support * baskets, max_length)
    rules = []
    for itemset, both in frequent.items():
        members = items_of(itemset)
        if len(members) < 2:
            continue
        for consequent in members:
            antecedent = itemset ^ 1 << consequent
            rule = Rule(
                antecedent=items_of(antecedent),
                consequent=consequent,
                antecedent_count=frequent[antecedent],
                both_count=both,
                consequent_count=frequent[1 << consequent],
                baskets=baskets,
            )
            if rule.confidence >= min_confidence:
                rules.append(rule)
    return sorted(rules, key=lambda r: (r.antecedent, r.consequent))
