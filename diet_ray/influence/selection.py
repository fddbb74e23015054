"""Coverage-aware streaming selection of a stage's candidate rows.

Strata are label × key cluster; each stratum gets a quota proportional to its share of the
stage (label share exact from the schema, cluster share estimated on the probe sample), and
inside a stratum rows are ranked by priority (influence by default). A plain global top-m
by influence picks hard, noisy rows and does worse than random (DESIGN, lesson 1); the
strata keep the selection representative. Batches merge into a table that never holds
more than sum(quotas) rows: memory O(m), not O(stage).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from diet_ray.influence.scorer import top_per_stratum


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 20) -> np.ndarray:
    """Spherical k-means centroids [k', H] (k' <= k, unit norm) of unit-norm rows x [M, H]."""
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        assign = np.argmax(x @ centroids.T, axis=1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c = members.sum(0)
                centroids[j] = c / max(np.linalg.norm(c), 1e-12)
    return centroids.astype(np.float32)


def largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer quotas summing to `total`, proportional to `shares` [S]."""
    shares = np.asarray(shares, np.float64)
    if shares.sum() <= 0 or total <= 0:
        return np.zeros(len(shares), np.int64)
    exact = total * shares / shares.sum()
    base = np.floor(exact).astype(np.int64)
    rest = total - base.sum()
    base[np.argsort(-(exact - base), kind="stable")[:rest]] += 1
    return base


def stratum_quotas(total: int, positive_rate: float, probe_strata: np.ndarray,
                   num_clusters: int) -> np.ndarray:
    """Quotas [2 * num_clusters]: label share × cluster share within the label (probe)."""
    shares = np.zeros(2 * num_clusters)
    for label, rate in ((0, 1 - positive_rate), (1, positive_rate)):
        counts = np.bincount(probe_strata[probe_strata // num_clusters == label] % num_clusters,
                             minlength=num_clusters).astype(np.float64)
        within = counts / counts.sum() if counts.sum() else np.full(num_clusters, 1 / num_clusters)
        shares[label * num_clusters:(label + 1) * num_clusters] = rate * within
    return largest_remainder(total, shares)


class StratifiedTopM:
    """Merges scored batches, keeping each stratum's `quotas[s]` best rows by `_priority`."""

    def __init__(self, quotas: np.ndarray) -> None:
        self.quotas = np.asarray(quotas, np.int64)
        self.kept: pa.Table | None = None
        self.rows_seen = 0

    def add(self, table: pa.Table) -> None:
        self.rows_seen += table.num_rows
        merged = table if self.kept is None else pa.concat_tables([self.kept, table])
        stratum = merged.column("_stratum").to_numpy()
        priority = merged.column("_priority").to_numpy()
        self.kept = merged.take(pa.array(top_per_stratum(stratum, priority, self.quotas)))

    def result(self) -> pa.Table | None:
        """Kept rows, sorted by stratum then priority (best first)."""
        if self.kept is None:
            return None
        stratum = self.kept.column("_stratum").to_numpy()
        priority = self.kept.column("_priority").to_numpy()
        return self.kept.take(pa.array(np.lexsort((-priority, stratum))))
