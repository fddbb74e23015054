"""Memory slots, addressing, writing: hand-made examples and the invariants (K=1 soft
one-hot equals the hard path, gradients reach the memory's logits, frozen slots stay
bit-identical)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diet_ray.data.batch import SparseBatch
from diet_ray.distill.bilevel import (
    bilevel_loss,
    gradient_matching_loss,
    model_params,
    touched_rows,
)
from diet_ray.memory import addressing
from diet_ray.memory.addressing import address, attention_mass, choose_new, coverage, evict
from diet_ray.memory.slots import MemoryTensors, Slots, nearest_same_label, new_slots, top_k
from diet_ray.models import build_model
from tests.unit.distill_fixtures import real_batch, tiny_schema

CATEGORICAL = np.array([True, True, False])


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def slots_from(rows: SparseBatch, candidates: int = 1) -> Slots:
    keys = unit(np.random.default_rng(0).standard_normal((len(rows), 4)))
    return new_slots(rows, keys, np.zeros(len(rows)), stage=0, candidates=candidates,
                     seed_logit=5.0, label_logit=np.zeros(len(rows)), categorical=CATEGORICAL)


def test_k1_soft_one_hot_equals_the_hard_path():
    schema = tiny_schema()
    rows = real_batch(10, seed=0)
    mem = MemoryTensors(slots_from(rows), np.arange(10)).batch()
    # categorical: weight exactly 1 on the own id; multi-hot: the real 1/n weights
    assert torch.equal(mem.ids, rows.ids)
    assert torch.allclose(mem.weights, rows.weights, atol=1e-6)
    torch.manual_seed(0)
    model = build_model("deepfm", schema)
    assert torch.allclose(model(mem), model(rows), atol=1e-6)


def test_new_slot_layout_by_hand():
    rows = real_batch(4, seed=0)
    rows = rows.with_labels(torch.tensor([1.0, 1.0, 0.0, 1.0]))
    keys = unit([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    s = new_slots(rows, keys, np.arange(4.0), stage=3, candidates=3, seed_logit=5.0,
                  label_logit=np.zeros(4), categorical=CATEGORICAL)
    assert s.ids.shape == (4, 3, 3)
    # row 0 (label 1): neighbours of the same label by key: row 1 then row 3 (row 2 is label 0)
    assert nearest_same_label(keys, rows.labels.numpy() >= 0.5, 2)[0].tolist() == [1, 3]
    assert s.ids[0, 0].tolist() == [rows.ids[0, 0, 0], rows.ids[1, 0, 0], rows.ids[3, 0, 0]]
    assert s.id_logits[0, 0].tolist() == [5.0, 0.0, 0.0]
    # row 2 is the only label-0 row: no neighbours, only its own id is a candidate
    assert s.mask[2, 0].tolist() == [True, False, False]
    # the multi-hot field keeps the row's two values at equal logits, no neighbours
    assert s.mask[0, 2].tolist() == [True, True, False]
    assert s.id_logits[0, 2, :2].tolist() == [5.0, 5.0]
    assert s.stage.tolist() == [3] * 4 and s.influence.tolist() == [0, 1, 2, 3]


def test_gradients_reach_memory_logits_labels_and_weights():
    schema = tiny_schema()
    slots = slots_from(real_batch(12, seed=0), candidates=3)
    mem = MemoryTensors(slots, np.arange(12))
    torch.manual_seed(0)
    model = build_model("dnn", schema, {"hidden_units": (8,)})
    loss = bilevel_loss(model, model_params(model), lambda: mem.batch(), real_batch(16, seed=1),
                        steps=3, lr=torch.tensor(0.1))
    grads = torch.autograd.grad(loss, list(mem.params.values()))
    for name, g in zip(mem.params, grads):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ["dnn", "fm", "deepfm", "wide_deep", "lr"])
def test_unroll_on_the_touched_table_rows_equals_the_full_tables(arch):
    schema = tiny_schema()
    mem = MemoryTensors(slots_from(real_batch(3, seed=0), candidates=2), np.arange(3))
    real = real_batch(2, seed=1)  # few rows: most table rows go untouched
    torch.manual_seed(0)
    model = build_model(arch, schema)
    full = bilevel_loss(model, model_params(model), lambda: mem.batch(), real, steps=3,
                        lr=torch.tensor(0.5))
    g_full = torch.autograd.grad(full, list(mem.params.values()))
    theta, buffers, (m, r) = touched_rows(model, model_params(model), [mem.batch(), real])
    table = next(k for k in theta if k.endswith("table.weight"))
    assert theta[table].shape[0] < model_params(model)[table].shape[0]  # really cut
    cut = bilevel_loss(model, theta, lambda: m, r, steps=3, lr=torch.tensor(0.5),
                       buffers=buffers)
    g_cut = torch.autograd.grad(cut, list(mem.params.values()))
    assert torch.allclose(cut, full, atol=1e-6)
    for name, a, b in zip(mem.params, g_full, g_cut):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
    theta, buffers, (m, r) = touched_rows(model, model_params(model), [mem.batch(), real])
    assert torch.allclose(
        gradient_matching_loss(model, model_params(model), mem.batch(), real),
        gradient_matching_loss(model, theta, m, r, buffers), atol=1e-5)


def test_only_addressed_slots_learn():
    slots = slots_from(real_batch(6, seed=0))
    mem = MemoryTensors(slots, np.array([1, 4]))
    batch = mem.batch()
    (batch.labels.sum() + batch.weights.sum() + batch.sample_weight.sum()).backward()
    assert mem.params["label_logit"].grad.shape == (2,)
    with torch.no_grad():
        for p in mem.params.values():
            p.add_(1.0)
    after = mem.updated_slots()
    frozen = [0, 2, 3, 5]
    for name in ("id_logits", "label_logit", "weight_logit", "dense"):
        assert np.array_equal(getattr(after, name)[frozen], getattr(slots, name)[frozen]), name
        assert not np.array_equal(getattr(after, name)[[1, 4]], getattr(slots, name)[[1, 4]])


def test_addressing_picks_the_slots_the_rows_attend_to():
    slot_keys = unit([[1, 0], [0, 1], [-1, 0]])
    rows = unit([[0.1, 1], [0, 1], [1, 0.05]])
    weight = np.array([1.0, 1.0, 0.1])  # two strong rows near slot 1, a weak one near slot 0
    mass = attention_mass(slot_keys, rows, weight, temperature=0.1)
    assert np.argmax(mass) == 1 and mass[2] < mass[0] < mass[1]
    assert address(mass, 1).tolist() == [1]
    assert address(mass, 2).tolist() == [0, 1]
    assert np.allclose(coverage(slot_keys, rows), [rows[0] @ slot_keys[1], 1.0, rows[2] @ slot_keys[0]])


def test_choose_new_skips_covered_rows_and_evict_keeps_the_most_influential():
    covered = np.array([True, False, True, False])
    assert choose_new(np.array([0, 1, 2, 3]), covered, 2).tolist() == [1, 3]
    assert choose_new(np.array([2, 0, 1, 3]), covered, 3).tolist() == [1, 3, 2]
    assert evict(np.array([0.5, 0.1, 0.9, 0.3]), 2).tolist() == [0, 2]


def test_top_k_matches_a_stable_descending_sort_ties_included():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (50, 30)).astype(np.float32)  # many ties
    scores[0] = 1.0  # a row of nothing but ties
    for k in (1, 3, 30):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert np.array_equal(top_k(scores, k), expected), k


def test_blocked_neighbours_equal_brute_force_and_new_slots_of_a_subset():
    rng = np.random.default_rng(4)
    keys = unit(rng.standard_normal((40, 4)))
    keys[5] = keys[7]  # a duplicate key: a tie broken by the lower index
    labels = rng.random(40) < 0.4
    sims = keys @ keys.T
    np.fill_diagonal(sims, -np.inf)
    sims[labels[:, None] != labels[None, :]] = -np.inf
    brute = np.argsort(-sims, axis=1, kind="stable")[:, :3]
    got = nearest_same_label(keys, labels, 3, block_rows=7)
    assert np.array_equal(got, brute)
    queries = np.array([9, 2, 31])
    assert np.array_equal(nearest_same_label(keys, labels, 3, queries, block_rows=2),
                          brute[queries])
    rows = real_batch(40, seed=1).with_labels(torch.from_numpy(labels.astype(np.float32)))
    kwargs = {"stage": 0, "candidates": 3, "seed_logit": 5.0, "label_logit": np.arange(40.0),
                  "categorical": CATEGORICAL}
    whole = new_slots(rows, keys, np.arange(40.0), **kwargs).select(queries)
    part = new_slots(rows, keys, np.arange(40.0), index=queries, **kwargs)
    for name in ("ids", "mask", "id_logits", "label_logit", "key", "influence"):
        assert np.array_equal(getattr(part, name), getattr(whole, name)), name


def test_blocked_attention_and_coverage_equal_the_whole_matrix(monkeypatch):
    rng = np.random.default_rng(5)
    slots, rows = unit(rng.standard_normal((13, 4))), unit(rng.standard_normal((29, 4)))
    weight = rng.random(29)
    logits = rows @ slots.T / 0.1
    att = np.exp(logits - logits.max(1, keepdims=True))
    att /= att.sum(1, keepdims=True)
    monkeypatch.setattr(addressing, "BLOCK_ELEMENTS", 13 * 4)  # blocks of 4 rows
    assert addressing.block_rows(13) == 4
    np.testing.assert_allclose(attention_mass(slots, rows, weight, 0.1), weight @ att,
                               rtol=1e-5)
    np.testing.assert_array_equal(coverage(slots, rows), (rows @ slots.T).max(1))
