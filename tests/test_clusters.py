"""K-means segmentation: recovery of known groups, stable ids across runs, new and vanished
clusters reported, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from models.segmentation import describe, fit_clusters, match_previous

FEATURES = ["aum", "txns", "share"]
CENTRES = np.array([[1e4, 2, 0.1], [5e5, 20, 0.5], [5e6, 8, 0.9]])


def blobs(seed: int, per_group: int = 400, centres=CENTRES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), per_group)
    raw = centres[truth] * np.exp(rng.normal(0, 0.15, (len(truth), 3)))
    raw[rng.random(len(truth)) < 0.02, 2] = np.nan  # some missing values
    return raw, truth


def fit(raw, k=3, seed=7, **kwargs):
    options = dict(
        k=k,
        k_range=(2, 6),
        seed=seed,
        fit_sample_size=100_000,
        silhouette_sample_size=1_000,
        bootstrap_rounds=3,
    )
    return fit_clusters(raw, FEATURES, ["aum", "txns"], **(options | kwargs))


def test_known_groups_are_recovered_and_stable_under_bootstrap():
    raw, truth = blobs(1)
    model = fit(raw)
    labels, distances = model.assign(raw)
    assert adjusted_rand_score(truth, labels) > 0.99
    assert min(model.bootstrap_ari) > 0.95 and (distances >= 0).all()
    assert sorted(set(labels)) == [1, 2, 3]


def test_k_is_chosen_by_silhouette_when_not_fixed():
    raw, _ = blobs(2)
    model = fit(raw, k=None)
    assert model.k == 3 and set(model.silhouette_by_k) == {2, 3, 4, 5, 6}


def test_the_same_inputs_give_the_same_clusters():
    raw, _ = blobs(3)
    first, second = fit(raw), fit(raw)
    assert np.array_equal(first.assign(raw)[0], second.assign(raw)[0])
    assert np.array_equal(first.centroids, second.centroids)


def test_ids_follow_the_groups_from_one_run_to_the_next():
    raw, truth = blobs(4)
    yesterday = fit(raw, seed=1)
    yesterday_labels = yesterday.assign(raw)[0]
    previous_centroids = yesterday.scaler.inverse(yesterday.centroids)
    # tonight: new noise, customers in another order, another seed
    raw2, truth2 = blobs(5)
    order = np.random.default_rng(0).permutation(len(raw2))
    tonight = fit(raw2[order], seed=99)
    matching = match_previous(tonight, yesterday.cluster_ids, previous_centroids, 1.0)
    assert matching.new_ids == [] and matching.vanished_ids == []
    tonight.cluster_ids = matching.cluster_ids
    tonight_labels = tonight.assign(raw2)[0]
    for group in range(3):  # each true group keeps yesterday's id
        before = np.bincount(yesterday_labels[truth == group]).argmax()
        after = np.bincount(tonight_labels[truth2 == group]).argmax()
        assert before == after


def test_a_new_group_gets_a_fresh_id_and_a_lost_one_is_reported():
    raw, _ = blobs(6)
    yesterday = fit(raw)
    previous = yesterday.scaler.inverse(yesterday.centroids)
    # tonight the middle group is gone and a far-away group appears
    centres = np.array([CENTRES[0], CENTRES[2], [2e8, 200, 0.0]])
    raw2, _ = blobs(7, centres=centres)
    tonight = fit(raw2)
    matching = match_previous(tonight, yesterday.cluster_ids, previous, 1.0)
    assert len(matching.new_ids) == 1 and matching.new_ids[0] == max(yesterday.cluster_ids) + 1
    assert len(matching.vanished_ids) == 1
    assert sorted(matching.cluster_ids) != sorted(yesterday.cluster_ids)
    assert len(set(matching.cluster_ids)) == 3  # ids are never shared


def test_labels_name_what_sets_a_cluster_apart():
    raw, _ = blobs(8)
    model = fit(raw)
    richest = int(np.argmax(model.scaler.inverse(model.centroids)[:, 0]))
    assert describe(model, model.cluster_ids[richest], FEATURES).count("high") >= 1
    assert "aum" in describe(model, model.cluster_ids[richest], FEATURES)


def test_too_few_customers_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        fit(np.ones((1, 3)))


def test_member_means_skip_nulls_and_equal_a_group_by():
    import numpy as np
    import polars as pl

    from transforms.clusters import _member_means

    rng = np.random.default_rng(3)
    raw = rng.normal(size=(1_000, 2))
    raw[::7, 1] = np.nan  # a feature missing for some customers
    labels = rng.choice([2, 5, 9], size=1_000)
    means = _member_means(raw, labels, [2, 5, 9, 11], ["a", "b"])
    expected = (
        pl.DataFrame({"cluster_id": labels, "a": raw[:, 0], "b": raw[:, 1]})
        .with_columns(pl.col("b").fill_nan(None))
        .group_by("cluster_id")
        .agg(pl.len().alias("customers"), pl.col("a").mean(), pl.col("b").mean())
        .sort("cluster_id")
    )
    got = means.filter(pl.col("cluster_id") != 11).sort("cluster_id")
    assert got["customers"].to_list() == expected["customers"].to_list()
    assert np.allclose(got["mean_a"].to_numpy(), expected["a"].to_numpy(), rtol=1e-12)
    assert np.allclose(got["mean_b"].to_numpy(), expected["b"].to_numpy(), rtol=1e-12)
    empty = means.filter(pl.col("cluster_id") == 11)  # a cluster nobody was assigned to
    assert empty["customers"][0] == 0 and empty["mean_a"][0] is None
