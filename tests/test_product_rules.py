"""Association rules are exact: every rule and figure equals brute-force counting."""

from __future__ import annotations

from itertools import combinations

import duckdb
import numpy as np
import pytest

from models.association_rules import frequent_itemsets, mine_rules


def random_baskets(seed: int, customers: int = 3_000, items: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    appetite = rng.random(customers)[:, None]
    held = rng.random((customers, items)) < appetite * np.linspace(0.9, 0.2, items)
    held[:, 2] |= held[:, 0] & held[:, 1]  # a real 3-item pattern
    return held


def brute_force(held: np.ndarray, min_support: float, min_confidence: float, max_length=None):
    customers, items = held.shape
    count = {}
    for size in range(1, (max_length or items) + 1):
        for itemset in combinations(range(items), size):
            n = int(held[:, list(itemset)].all(axis=1).sum())
            if n >= min_support * customers:
                count[itemset] = n
    rules = {}
    for itemset, both in count.items():
        if len(itemset) < 2:
            continue
        for consequent in itemset:
            antecedent = tuple(i for i in itemset if i != consequent)
            confidence = both / count[antecedent]
            if confidence >= min_confidence:
                lift = confidence / (count[(consequent,)] / customers)
                rules[(antecedent, consequent)] = (both / customers, confidence, lift)
    return rules


def compress(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = (held * (1 << np.arange(held.shape[1]))).sum(axis=1).astype(np.uint64)
    unique, counts = np.unique(masks, return_counts=True)
    return unique, counts


@pytest.mark.parametrize("max_length", [None, 3])
def test_rules_equal_brute_force_counting(max_length):
    held = random_baskets(1)
    masks, weights = compress(held)
    mined = mine_rules(
        masks, weights, held.shape[1], min_support=0.02, min_confidence=0.2, max_length=max_length
    )
    expected = brute_force(held, 0.02, 0.2, max_length)
    got = {(r.antecedent, r.consequent): (r.support, r.confidence, r.lift) for r in mined}
    assert set(got) == set(expected) and len(got) > 20
    for key, figures in expected.items():
        assert got[key] == pytest.approx(figures), key
    assert max(len(a) for a, _ in got) == (max_length or held.shape[1]) - 1 or max_length is None
    assert any(len(a) >= 3 for a, _ in got) or max_length == 3  # unbounded goes past 3


def test_itemsets_below_support_are_pruned_and_empty_input_is_empty():
    held = random_baskets(2, items=5)
    masks, weights = compress(held)
    frequent = frequent_itemsets(masks, weights, 5, min_count=0.5 * len(held))
    assert all(n >= 0.5 * len(held) for n in frequent.values())
    assert (
        mine_rules(
            np.array([], dtype=np.uint64), np.array([]), 5, min_support=0.1, min_confidence=0.1
        )
        == []
    )
    with pytest.raises(ValueError, match="at most 63"):
        frequent_itemsets(masks, weights, 64, 1)


def test_product_rules_table_on_the_sample_bank(small_bank):
    from pipeline.ingest import register_staged_views
    from pipeline.warehouse import open_catalog, partition_path

    config, _, _ = small_bank
    con = open_catalog(config.paths.warehouse)
    rows = con.sql(
        "select count(*), max(antecedent_size), min(support), max(confidence) from product_rules"
    ).fetchall()[0]
    assert rows[0] > 10 and rows[1] >= 2
    assert rows[2] >= config.product_rules.min_support and rows[3] <= 1
    # the strongest rule, checked by counting the staged holdings directly
    antecedent, consequent, both = con.sql(
        "select antecedent, consequent, customers_with_both from product_rules "
        "order by lift desc, antecedent_key limit 1"
    ).fetchall()[0]
    raw = duckdb.connect()
    register_staged_views(raw, config.paths.staging, config.generate.end_on)
    wanted = [*antecedent, consequent]
    features = partition_path(config.paths.warehouse, "customer_features", config.generate.end_on)
    counted = raw.sql(
        """
        select count(*) from (
            select customer_id from stg_balances
            where balance_on = (select max(balance_on) from stg_balances) and balance_cny > 0
              and list_contains($wanted, product_id)
              and customer_id in (select customer_id from read_parquet($features))
            group by customer_id having count(distinct product_id) = len($wanted))
        """,
        params={"wanted": wanted, "features": str(features)},
    ).fetchall()[0][0]
    assert counted == both > 0
