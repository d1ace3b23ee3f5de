"""K-means customer segmentation with cluster ids that stay stable from one run to the next.

Pure: arrays in, arrays and small dataclasses out; no I/O.

Preparation: missing values take the fit sample's median; money-like features pass through a
signed log (sign(x) * log1p(|x|)) for skew; then every feature is standardised. K-means (Lloyd,
several initialisations, a fixed seed) is fitted on a sample and every customer is assigned to
the nearest centroid in one vectorised step. k is fixed or chosen from a range by silhouette on
a sample. Stability is measured by refitting on bootstrap samples (adjusted Rand index against
the main fit). Ids are carried over from the previous run by Hungarian matching of centroids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score


@dataclass
class Scaler:
    features: list[str]
    log_features: list[str]
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray

    @property
    def logged(self) -> np.ndarray:
        return np.array([f in self.log_features for f in self.features])

    def transform(self, raw: np.ndarray) -> np.ndarray:
        values = np.where(np.isnan(raw), self.medians, raw)
        logged = values[:, self.logged]
        values[:, self.logged] = np.sign(logged) * np.log1p(np.abs(logged))
        return ((values - self.means) / self.scales).astype(np.float32)

    def inverse(self, standardised: np.ndarray) -> np.ndarray:
        values = standardised * self.scales + self.means
        logged = values[:, self.logged]
        values[:, self.logged] = np.sign(logged) * np.expm1(np.abs(logged))
        return values


def fit_scaler(raw: np.ndarray, features: list[str], log_features: list[str]) -> Scaler:
    known = ~np.isnan(raw).all(axis=0)  # a column with no value at all gets 0
    medians = np.zeros(raw.shape[1])
    medians[known] = np.nanmedian(raw[:, known], axis=0)
    partial = Scaler(
        features, log_features, medians, np.zeros(len(features)), np.ones(len(features))
    )
    prepared = partial.transform(raw).astype(np.float64)
    scales = prepared.std(axis=0)
    return Scaler(
        features, log_features, medians, prepared.mean(axis=0), np.where(scales > 0, scales, 1.0)
    )


@dataclass
class ClusterFit:
    scaler: Scaler
    centroids: np.ndarray  # k x features, standardised space, in cluster-id order
    cluster_ids: list[int]
    k: int
    inertia: float
    silhouette_by_k: dict[int, float] = field(default_factory=dict)
    bootstrap_ari: list[float] = field(default_factory=list)
    fit_rows: int = 0

    def assign(self, raw: np.ndarray, batch: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
        """(cluster id, distance to its centroid) per row, in batches to bound memory."""
        ids = np.asarray(self.cluster_ids)
        labels = np.empty(len(raw), dtype=np.int64)
        distances = np.empty(len(raw), dtype=np.float64)
        squared_norms = (self.centroids.astype(np.float64) ** 2).sum(axis=1)
        for start in range(0, len(raw), batch):
            z = self.scaler.transform(raw[start : start + batch]).astype(np.float64)
            squared = (z**2).sum(axis=1)[:, None] - 2 * z @ self.centroids.T + squared_norms
            nearest = squared.argmin(axis=1)
            labels[start : start + batch] = ids[nearest]
            distances[start : start + batch] = np.sqrt(
                np.maximum(squared[np.arange(len(z)), nearest], 0)
            )
        return labels, distances


def _kmeans(z: np.ndarray, k: int, seed: int, n_init: int) -> KMeans:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)


def fit_clusters(
    raw: np.ndarray,
    features: list[str],
    log_features: list[str],
    *,
    k: int | None,
    k_range: tuple[int, int],
    seed: int,
    fit_sample_size: int,
    silhouette_sample_size: int,
    bootstrap_rounds: int,
    n_init: int = 4,
) -> ClusterFit:
    if len(raw) < 2:
        raise ValueError(f"clustering needs at least 2 customers, got {len(raw)}")
    rng = np.random.default_rng(seed)
    sample = (
        raw
        if len(raw) <= fit_sample_size
        else raw[rng.choice(len(raw), fit_sample_size, replace=False)]
    )
    scaler = fit_scaler(sample, features, log_features)
    z = scaler.transform(sample)
    scored = np.arange(len(z))
    if len(z) > silhouette_sample_size:
        scored = np.sort(rng.choice(len(z), silhouette_sample_size, replace=False))
    silhouettes: dict[int, float] = {}
    candidates = [k] if k else list(range(k_range[0], k_range[1] + 1))
    candidates = [c for c in candidates if 2 <= c < len(z)] or [min(2, len(z))]
    fits = {}
    for candidate in candidates:
        fits[candidate] = _kmeans(z, candidate, seed, n_init)
        labels = fits[candidate].labels_[scored]
        if len(set(labels)) > 1:
            silhouettes[candidate] = float(silhouette_score(z[scored], labels))
    chosen = k or max(silhouettes, key=lambda c: (silhouettes[c], -c))
    model = fits[chosen]
    # first-run ids: 1..k by size, largest first (ties by centroid, for determinism)
    sizes = np.bincount(model.labels_, minlength=chosen)
    order = sorted(range(chosen), key=lambda i: (-sizes[i], tuple(model.cluster_centers_[i])))
    aris = []
    for round_ in range(bootstrap_rounds):
        picked = rng.choice(len(z), len(z), replace=True)
        refit = _kmeans(z[picked], chosen, seed + 1 + round_, 1)
        aris.append(float(adjusted_rand_score(model.labels_, refit.predict(z))))
    return ClusterFit(
        scaler=scaler,
        centroids=model.cluster_centers_[order],
        cluster_ids=list(range(1, chosen + 1)),
        k=chosen,
        inertia=float(model.inertia_),
        silhouette_by_k=silhouettes,
        bootstrap_ari=aris,
        fit_rows=len(z),
    )


@dataclass(frozen=True)
class Matching:
    cluster_ids: list[int]  # the id of each current centroid
    distances: list[float | None]  # to the matched previous centroid (None: a new cluster)
    new_ids: list[int]
    vanished_ids: list[int]


def match_previous(
    fit: ClusterFit,
    previous_ids: list[int],
    previous_centroids_raw: np.ndarray,
    max_distance: float,
) -> Matching:
    """Give each current centroid the id of the previous centroid it matches (Hungarian
    assignment on distances in the current standardised space); a centroid farther than
    `max_distance` from every unmatched previous one gets a new id, never a reused one."""
    if not previous_ids:
        return Matching(list(fit.cluster_ids), [None] * fit.k, list(fit.cluster_ids), [])
    previous = fit.scaler.transform(previous_centroids_raw).astype(np.float64)
    cost = np.linalg.norm(fit.centroids[:, None, :] - previous[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    ids: list[int | None] = [None] * fit.k
    distances: list[float | None] = [None] * fit.k
    for row, col in zip(rows, cols, strict=True):
        if cost[row, col] <= max_distance:
            ids[row] = previous_ids[col]
            distances[row] = float(cost[row, col])
    next_id = max(previous_ids) + 1
    new_ids = []
    for row in range(fit.k):
        if ids[row] is None:
            ids[row] = next_id
            new_ids.append(next_id)
            next_id += 1
    vanished = sorted(set(previous_ids) - set(ids))
    return Matching([int(i) for i in ids], distances, new_ids, vanished)


def describe(
    fit: ClusterFit, cluster_id: int, features: list[str], top: int = 2, threshold: float = 0.5
) -> str:
    """A label from the features that set the cluster apart most (centroid in standard units):
    e.g. 'high aum_avg_cny, low txn_count_90d'; 'typical' when nothing stands out."""
    centroid = fit.centroids[fit.cluster_ids.index(cluster_id)]
    ranked = [i for i in np.argsort(-np.abs(centroid)) if abs(centroid[i]) >= threshold][:top]
    if not ranked:
        return "typical"
    return ", ".join(f"{'high' if centroid[i] > 0 else 'low'} {features[i]}" for i in ranked)
