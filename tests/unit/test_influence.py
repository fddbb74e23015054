"""Influence scoring against brute-force per-sample gradients; streaming stratified
selection against a one-shot selection; quotas by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from diet_ray.evaluate.train import loss_fn
from diet_ray.influence.scorer import influence_scores, last_linear, probe_gradient, top_per_stratum
from diet_ray.influence.selection import StratifiedTopM, largest_remainder, stratum_quotas
from diet_ray.models import build_model
from tests.unit.distill_fixtures import real_batch, tiny_schema


def brute_force_last_layer_grads(model, batch):
    """Per-row gradient of the row's loss w.r.t. the final linear layer's weight and bias."""
    layer = last_linear(model)
    rows = []
    for i in range(len(batch)):
        row = batch.select(slice(i, i + 1))
        model.zero_grad()
        loss_fn(model(row), row).backward()
        rows.append(torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad.reshape(-1)]))
    return torch.stack(rows)


def test_scores_equal_brute_force_tracin_over_two_checkpoints():
    schema = tiny_schema()
    torch.manual_seed(0)
    models = [build_model("dnn", schema, {"hidden_units": (8, 4)}) for _ in range(2)]
    probe, rows = real_batch(20, seed=1), real_batch(12, seed=2)
    probes = [probe_gradient(m, probe) for m in models]
    score, align, prob, h = influence_scores(models, probes, rows)
    expected = torch.zeros(len(rows))
    for m in models:
        g_probe = brute_force_last_layer_grads(m, probe).mean(0)
        assert torch.allclose(g_probe, probe_gradient(m, probe), atol=1e-6)
        expected += brute_force_last_layer_grads(m, rows) @ g_probe
    assert np.allclose(score, expected.numpy(), atol=1e-6)
    g_new = brute_force_last_layer_grads(models[-1], rows)
    g_probe = brute_force_last_layer_grads(models[-1], probe).mean(0)
    cos = (g_new @ g_probe) / (g_new.norm(dim=1) * g_probe.norm())
    assert np.allclose(align, cos.numpy(), atol=1e-5)
    assert np.allclose(prob, torch.sigmoid(models[-1](rows)).detach().numpy(), atol=1e-6)
    assert h.shape == (12, 4)


def test_top_per_stratum_by_hand():
    stratum = np.array([0, 1, 0, 0, 1, 2])
    priority = np.array([0.1, 0.9, 0.5, 0.5, 0.2, 0.3])
    # stratum 0 keeps 2 (0.5 and 0.5, tie -> lower index first), stratum 1 keeps 1, 2 keeps 0
    assert top_per_stratum(stratum, priority, np.array([2, 1, 0])).tolist() == [1, 2, 3]


def test_streaming_merge_equals_one_shot_and_stays_bounded():
    rng = np.random.default_rng(0)
    quotas = np.array([3, 2, 4, 1])
    tables = []
    for _ in range(6):
        n = 50
        tables.append(pa.table({"row": rng.integers(0, 10**9, n), "_stratum": rng.integers(0, 4, n),
                                "_priority": rng.random(n).astype(np.float32)}))
    sel = StratifiedTopM(quotas)
    for t in tables:
        sel.add(t)
        assert sel.kept.num_rows <= quotas.sum()
    whole = pa.concat_tables(tables)
    expect = whole.take(pa.array(top_per_stratum(whole.column("_stratum").to_numpy(),
                                                 whole.column("_priority").to_numpy(), quotas)))
    assert sorted(sel.result().column("row").to_pylist()) == sorted(expect.column("row").to_pylist())


def test_quotas_by_hand():
    assert largest_remainder(10, np.array([1, 1, 1])).tolist() == [4, 3, 3]
    # 2 clusters; probe: label 0 all in cluster 0; label 1 split 1:3 -> strata 2, 3
    probe = np.array([0, 0, 2, 3, 3, 3])
    q = stratum_quotas(20, positive_rate=0.4, probe_strata=probe, num_clusters=2)
    assert q.tolist() == [12, 0, 2, 6]


def test_call_counter_counts_a_call_once_all_its_pieces_arrived():
    from diet_ray.influence.scoring_stream import CallCounter

    def piece(call: int, call_rows: int, rows_in: int, n: int) -> pa.Table:
        return pa.table({"_call": [call] * n, "_call_rows": [call_rows] * n,
                         "_rows_in": [rows_in] * n})

    counter = CallCounter()
    counter.add(piece(7, 5, 40, 2))  # call 7: 2 of its 5 output rows
    assert counter.rows_in == 0
    counter.add(pa.concat_tables([piece(9, 1, 30, 1), piece(7, 5, 40, 2)]))  # 9 done, 7: 4/5
    assert counter.rows_in == 30
    counter.add(piece(7, 5, 40, 1))
    assert counter.rows_in == 70 and counter.received == {}
