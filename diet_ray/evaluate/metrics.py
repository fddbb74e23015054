"""Evaluation metrics: exact and streaming AUC / LogLoss, and the rank metrics of the benchmark.

Conventions (as in scikit-learn): true labels come first, then scores, e.g.
`auc(labels, scores)`. Labels are floats in [0, 1]; a soft label y counts as y of a positive
and 1 - y of a negative, multiplied by the optional `sample_weight`. Inputs may be numpy
arrays, sequences or (CPU) torch tensors of shape [N]. Pure numpy: no scikit-learn / scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

DEFAULT_BINS = 2**16
LOGLOSS_EPS = 1e-7


def _np(x: ArrayLike, name: str) -> np.ndarray:
    """A float64 numpy vector [N] from an array, sequence or tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    out = np.asarray(x, dtype=np.float64).reshape(-1)
    if np.isnan(out).any():
        raise ValueError(f"{name} contains NaN; check the model output / data for NaNs")
    return out


def _masses(
    labels: ArrayLike, scores: ArrayLike, sample_weight: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, positive mass, negative mass), each [N], validated."""
    y, s = _np(labels, "labels"), _np(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.size} rows but scores has {s.size}")
    if y.size and (y.min() < 0 or y.max() > 1):
        raise ValueError("labels must lie in [0, 1] (soft labels allowed)")
    w = np.ones_like(y) if sample_weight is None else _np(sample_weight, "sample_weight")
    if w.shape != y.shape:
        raise ValueError(f"sample_weight has {w.size} rows but labels has {y.size}")
    if w.size and w.min() < 0:
        raise ValueError("sample_weight must be >= 0")
    return s, w * y, w * (1.0 - y)


def _auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from per-group masses [G] of groups sorted by ascending score; ties count 1/2."""
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return math.nan
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def auc(labels: ArrayLike, scores: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counted as 1/2.

    For hard labels this is the Mann-Whitney statistic with average ranks for ties, i.e. the
    value of `sklearn.metrics.roc_auc_score`. `scores` [N] may be logits or probabilities
    (any monotone transform gives the same AUC). NaN when either class has zero mass.
    O(N log N) time, O(N) memory.
    """
    s, pos, neg = _masses(labels, scores, sample_weight)
    if s.size == 0:
        return math.nan
    order = np.argsort(s, kind="stable")
    s, pos, neg = s[order], pos[order], neg[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each tie group
    return _auc_from_groups(np.add.reduceat(pos, starts), np.add.reduceat(neg, starts))


class StreamingAUC:
    """AUC over a stream of (labels, probabilities) batches in O(num_bins) memory.

    Predicted probabilities [N] in [0, 1] fall into `num_bins` equal-width bins; each bin
    keeps the positive and negative mass it received. The AUC is computed as if all scores
    in one bin were tied (a positive-negative pair inside one bin counts 1/2).

    Error bound: only positive-negative pairs that share a bin can be scored differently from
    the exact AUC, and each by at most 1/2, so

        |streaming AUC - exact AUC| <= 1/2 * (pair mass in the same bin) / (P * N)
                                    <= fraction of positive-negative pairs in the same bin,

    where P and N are the total positive and negative masses. `error_bound()` returns the
    tighter (first) value, computed from the histogram itself. Bins are uniform in
    probability, so saturated predictions (|logit| > ~11 with 2^16 bins) share the end bins;
    the bound reports that when it happens. Accumulators with the same `num_bins` merge
    exactly (`merge`), e.g. across Ray workers.
    """

    def __init__(self, num_bins: int = DEFAULT_BINS) -> None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self.pos = np.zeros(num_bins, dtype=np.float64)
        self.neg = np.zeros(num_bins, dtype=np.float64)
        self.rows = 0

    def update(
        self, labels: ArrayLike, probs: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> None:
        """Add a batch: `labels` [N] in [0, 1], `probs` [N] predicted probabilities."""
        p, pos, neg = _masses(labels, probs, sample_weight)
        if p.size and (p.min() < 0 or p.max() > 1):
            raise ValueError("StreamingAUC takes probabilities in [0, 1]; apply a sigmoid first")
        idx = np.minimum((p * self.num_bins).astype(np.int64), self.num_bins - 1)
        self.pos += np.bincount(idx, weights=pos, minlength=self.num_bins)
        self.neg += np.bincount(idx, weights=neg, minlength=self.num_bins)
        self.rows += int(p.size)

    def merge(self, other: StreamingAUC) -> StreamingAUC:
        """Add `other`'s counts into this accumulator (in place); returns self."""
        if other.num_bins != self.num_bins:
            raise ValueError(f"cannot merge {other.num_bins} bins into {self.num_bins} bins")
        self.pos += other.pos
        self.neg += other.neg
        self.rows += other.rows
        return self

    def compute(self) -> float:
        """The binned AUC; NaN when either class has zero mass."""
        return _auc_from_groups(self.pos, self.neg)

    def error_bound(self) -> float:
        """Upper bound on |compute() - exact AUC| (see the class docstring); NaN if undefined."""
        total = self.pos.sum() * self.neg.sum()
        if total <= 0:
            return math.nan
        return float(0.5 * (self.pos * self.neg).sum() / total)


def log_loss(
    labels: ArrayLike,
    probs: ArrayLike,
    sample_weight: ArrayLike | None = None,
    eps: float = LOGLOSS_EPS,
) -> float:
    """Weighted mean binary cross-entropy, probabilities clipped to [eps, 1 - eps].

    `labels` [N] in [0, 1] (soft allowed), `probs` [N]. NaN for empty input or zero weight.
    """
    acc = StreamingLogLoss(eps)
    acc.update(labels, probs, sample_weight)
    return acc.compute()


class StreamingLogLoss:
    """Weighted mean binary cross-entropy accumulated over batches (see `log_loss`)."""

    def __init__(self, eps: float = LOGLOSS_EPS) -> None:
        self.eps = eps
        self.loss_sum = 0.0
        self.weight_sum = 0.0
        self.rows = 0

    def update(
        self, labels: ArrayLike, probs: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> None:
        """Add a batch: `labels` [N] in [0, 1], `probs` [N] predicted probabilities."""
        p, pos, neg = _masses(labels, probs, sample_weight)
        p = np.clip(p, self.eps, 1.0 - self.eps)
        self.loss_sum += float(-(pos * np.log(p) + neg * np.log1p(-p)).sum())
        self.weight_sum += float((pos + neg).sum())
        self.rows += int(p.size)

    def merge(self, other: StreamingLogLoss) -> StreamingLogLoss:
        """Add `other`'s sums into this accumulator (in place); returns self."""
        self.loss_sum += other.loss_sum
        self.weight_sum += other.weight_sum
        self.rows += other.rows
        return self

    def compute(self) -> float:
        return self.loss_sum / self.weight_sum if self.weight_sum > 0 else math.nan


# -- rank metrics for the benchmark (candidate models ranked by test AUC) -----------------------


def rankdata(x: ArrayLike) -> np.ndarray:
    """Ranks 1..N of `x` [N], ties given their average rank (scipy's method='average')."""
    v = _np(x, "x")
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _np(a, "a"), _np(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a has {x.size} entries but b has {y.size}")
    return x, y


def kendall_tau(a: ArrayLike, b: ArrayLike) -> float:
    """Kendall's tau-b between two scorings [N] of the same N candidates (ties handled).

    tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)), n0 = N(N-1)/2 pairs, n1 / n2 the pairs tied
    in a / in b; equals scipy.stats.kendalltau's default. NaN when N < 2 or either side is
    constant. O(N^2): meant for tens to hundreds of candidates.
    """
    x, y = _pair(a, b)
    if x.size < 2:
        return math.nan
    iu = np.triu_indices(x.size, k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    denom = math.sqrt(float(np.abs(sx).sum()) * float(np.abs(sy).sum()))
    return float((sx * sy).sum() / denom) if denom > 0 else math.nan


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rho [N] vs [N]: Pearson correlation of average ranks. NaN if constant/N < 2."""
    x, y = _pair(a, b)
    if x.size < 2:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


def recovery(auc_method: float, auc_full: float) -> float:
    """(AUC_method - 0.5) / (AUC_full - 0.5): 1 = as good as full data, 0 = chance.

    NaN when `auc_full` is exactly 0.5 (full-data training learned nothing).
    """
    gap = auc_full - 0.5
    return (auc_method - 0.5) / gap if gap != 0 else math.nan


def top1_regret(full_scores: ArrayLike, method_scores: ArrayLike) -> float:
    """How much worse (under full-data training) the candidate picked by the method is.

    `full_scores` [N] and `method_scores` [N] score the same N candidates, higher is better
    (e.g. test AUC). Regret = max(full) - full[argmax(method)] >= 0; when several candidates
    tie for the method's top score, the mean of their full scores is used (the expected
    regret under random tie-breaking).
    """
    full, method = _pair(full_scores, method_scores)
    if full.size == 0:
        raise ValueError("top1_regret needs at least one candidate")
    picked = full[method == method.max()]
    return float(full.max() - picked.mean())
