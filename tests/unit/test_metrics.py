"""Metrics against hand-computed values: exact / streaming AUC (ties, soft labels), LogLoss,
Kendall tau-b and Spearman with ties, recovery and top-1 regret."""

import itertools
import math

import numpy as np
import pytest
import torch

from diet_ray.evaluate.metrics import (
    StreamingAUC,
    StreamingLogLoss,
    auc,
    kendall_tau,
    log_loss,
    rankdata,
    recovery,
    spearman,
    top1_regret,
)


def brute_auc(labels, scores) -> float:
    """Pairwise definition: P(s_pos > s_neg) + 1/2 P(tie), over all hard-labelled pairs."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_hand_values():
    # sklearn's docstring example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # one tie between a positive and a negative: (0.5 + 1 + 1 + 1) / 4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # all tied: chance
    assert auc([0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0 and auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert math.isnan(auc([1, 1], [0.2, 0.3])) and math.isnan(auc([], []))


def test_auc_matches_average_rank_formula_and_pairs_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20.0  # many ties
    ranks = rankdata(scores)
    n_pos, n_neg = labels.sum(), (1 - labels).sum()
    mann_whitney = (ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    assert auc(labels, scores) == pytest.approx(mann_whitney, abs=1e-12)
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)
    assert auc(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(mann_whitney)


def test_auc_soft_labels_and_weights_are_fractional_counts():
    # a soft label 0.25 is 0.25 of a positive plus 0.75 of a negative
    soft = auc([1.0, 0.25, 0.0], [0.9, 0.5, 0.1])
    expanded = auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1], sample_weight=[1, 0.25, 0.75, 1])
    # hand: P = 1.25, N = 1.75; pairs (pos 0.9 w1) beats all neg (1.75);
    # (pos 0.5 w.25) ties own neg .75 -> .5*.25*.75, beats 0.1 -> .25*1
    hand = (1.75 + 0.5 * 0.25 * 0.75 + 0.25) / (1.25 * 1.75)
    assert soft == pytest.approx(hand) and expanded == pytest.approx(hand)
    # integer weights equal row duplication
    assert auc([1, 0, 1], [0.2, 0.3, 0.7], [2, 1, 1]) == pytest.approx(
        auc([1, 1, 0, 1], [0.2, 0.2, 0.3, 0.7]))


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must lie"):
        auc([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="rows"):
        auc([1, 0], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        auc([1, 0], [np.nan, 0.2])


def test_streaming_auc_within_bound_on_random_data():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 20_000).astype(float)
    probs = 1 / (1 + np.exp(-(rng.normal(size=20_000) + labels)))
    for bins in (16, 256, 2**16):
        acc = StreamingAUC(bins)
        for part in np.array_split(np.arange(20_000), 7):
            acc.update(labels[part], probs[part])
        err, bound = abs(acc.compute() - auc(labels, probs)), acc.error_bound()
        assert err <= bound + 1e-12, (bins, err, bound)
        # and the bound is at most the same-bin pair fraction stated in the docstring
        assert bound <= 1.0 and acc.rows == 20_000
    assert acc.error_bound() < 1e-3  # 2^16 bins: tight


def test_streaming_auc_equals_exact_when_bins_separate_scores():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1], float)
    probs = np.array([0.1, 0.9, 0.35, 0.35, 0.6, 0.6, 0.2, 0.8])  # ties within one value
    acc = StreamingAUC(100)
    acc.update(labels, probs)
    assert acc.compute() == pytest.approx(auc(labels, probs), abs=1e-12)
    # well-separated classes: both exactly 1, bound 0
    sep = StreamingAUC()
    sep.update(np.r_[np.ones(50), np.zeros(50)], np.r_[np.linspace(0.6, 0.9, 50),
                                                       np.linspace(0.1, 0.4, 50)])
    assert sep.compute() == 1.0 and sep.error_bound() == 0.0


def test_streaming_auc_soft_labels_merge_and_probability_check():
    labels, probs = [1.0, 0.25, 0.0], [0.9, 0.5, 0.1]
    a, b = StreamingAUC(1000), StreamingAUC(1000)
    a.update(labels[:2], probs[:2])
    b.update(labels[2:], probs[2:])
    assert a.merge(b).compute() == pytest.approx(auc(labels, probs))
    with pytest.raises(ValueError, match="sigmoid"):
        a.update([1.0], [3.0])
    assert math.isnan(StreamingAUC().compute())


def test_log_loss_hand_values_and_streaming():
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx((-math.log(0.8) - math.log(0.7)) / 2)
    # soft label 0.5 at p = 0.5 costs ln 2
    assert log_loss([0.5], [0.5]) == pytest.approx(math.log(2))
    # weights: the weight-0 row does not count
    assert log_loss([1, 0], [0.8, 0.001], sample_weight=[1, 0]) == pytest.approx(-math.log(0.8))
    # clipping: a certain wrong prediction costs -ln(eps), not inf
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    acc = StreamingLogLoss()
    acc.update([1], [0.8])
    acc.update([0], [0.3])
    assert acc.compute() == pytest.approx(log_loss([1, 0], [0.8, 0.3])) and acc.rows == 2


def test_rankdata_average_ranks():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_kendall_tau_hand_values():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # ties: C = 4, D = 0, one pair tied in each -> 4 / sqrt(5 * 5) (= scipy's tau-b)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau([1], [2]))


def test_spearman_hand_values():
    # no ties: 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 4 / 120
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3.5, 3.5] -> 3.75 / 4.5
    assert spearman([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)
    assert spearman([0.7, 0.6, 0.8], [0.1, 0.0, 0.5]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))


def test_recovery_and_top1_regret_hand_values():
    assert recovery(0.65, 0.70) == pytest.approx(0.75)
    assert recovery(0.70, 0.70) == pytest.approx(1.0) and recovery(0.5, 0.7) == 0.0
    assert math.isnan(recovery(0.6, 0.5))
    full = [0.70, 0.72, 0.71]
    assert top1_regret(full, [0.60, 0.61, 0.65]) == pytest.approx(0.01)
    assert top1_regret(full, [0.60, 0.66, 0.65]) == 0.0
    # a tie for the method's top: the mean of the tied candidates' full scores
    assert top1_regret(full, [0.60, 0.65, 0.65]) == pytest.approx(0.005)


def test_kendall_tau_b_and_spearman_match_their_definitions_on_random_scores():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        a = rng.integers(0, 4, n).astype(float)  # many ties
        b = rng.integers(0, 4, n).astype(float)
        conc = disc = tie_a = tie_b = 0
        for i in range(n):
            for j in range(i + 1, n):
                s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
                conc += s > 0
                disc += s < 0
                tie_a += a[i] == a[j]
                tie_b += b[i] == b[j]
        pairs = n * (n - 1) / 2
        denom = math.sqrt((pairs - tie_a) * (pairs - tie_b))
        expected = (conc - disc) / denom if denom else math.nan
        got = kendall_tau(a, b)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
        # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
        p, q = rng.permutation(n), rng.permutation(n)
        d2 = float(((p - q) ** 2).sum())
        assert spearman(p, q) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))


def test_recovery_below_chance_and_above_full():
    assert recovery(0.45, 0.70) == pytest.approx(-0.25)  # worse than a coin
    assert recovery(0.75, 0.70) == pytest.approx(1.25)  # better than full data
    assert recovery(0.62, 0.62) == pytest.approx(1.0)
