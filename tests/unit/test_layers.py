"""Layers of the model zoo, each checked against a hand computation on a tiny input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import DenseField, Schema, SparseField
from diet_ray.layers import (
    CIN,
    MLP,
    BilinearInteraction,
    CrossNet,
    CrossNetV2,
    DenseEmbedding,
    FeatureEmbedding,
    FMInteraction,
    LinearTerm,
    SelfAttention,
    SoftEmbedding,
    SqueezeExcitation,
    fm_interaction,
)

VOCAB = (5, 3, 7)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _ids(b: int, k: int, vocab: tuple[int, ...] = VOCAB) -> torch.Tensor:
    return torch.stack([torch.randint(0, v, (b, k)) for v in vocab], dim=1)  # [B, F, K]


def _schema(num_dense: int) -> Schema:
    return Schema(
        dataset="toy",
        sparse=tuple(SparseField(f"f{i}", "categorical", v) for i, v in enumerate(VOCAB)),
        dense=tuple(DenseField(f"d{i}", 0.0, 1.0) for i in range(num_dense)),
        stages=(),
        stage_by="rows",
    )


def _batch(b: int, k: int, num_dense: int) -> SparseBatch:
    return SparseBatch(
        ids=_ids(b, k),
        weights=torch.rand(b, len(VOCAB), k),
        dense=torch.randn(b, num_dense) if num_dense else None,
        labels=torch.rand(b),
        sample_weight=torch.ones(b),
    )


# -- embeddings -------------------------------------------------------------------------


def test_soft_embedding_is_weighted_sum_of_per_field_rows() -> None:
    emb = SoftEmbedding(VOCAB, 4)
    ids, w = _ids(6, 3), torch.rand(6, 3, 3)
    out = emb(ids, w)
    assert out.shape == (6, 3, 4)
    table, offsets = emb.table.weight, (0, 5, 8)
    for b in range(6):
        for f in range(3):
            expect = sum(w[b, f, k] * table[offsets[f] + ids[b, f, k]] for k in range(3))
            torch.testing.assert_close(out[b, f], expect)


def test_soft_embedding_one_hot_equals_hard_lookup_and_ignores_zero_weight_slots() -> None:
    emb = SoftEmbedding(VOCAB, 4)
    ids = _ids(6, 1)
    hard = emb.table.weight[ids[..., 0] + torch.tensor([0, 5, 8])]  # [B, F, dim]
    assert torch.equal(emb(ids, torch.ones(6, 3, 1)), hard)
    junk = torch.cat([ids, _ids(6, 2)], dim=2)
    w = torch.tensor([1.0, 0.0, 0.0]).expand(6, 3, 3)
    assert torch.equal(emb(junk, w), hard)


def test_soft_embedding_is_twice_differentiable_in_weights_and_table() -> None:
    emb = SoftEmbedding(VOCAB, 2).double()
    ids = _ids(2, 2)
    w = torch.rand(2, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(emb, {"table.weight": table}, (ids, w)).pow(2)

    table = emb.table.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradgradcheck(f, (w, table))


def test_validate_ids_names_the_field() -> None:
    emb = SoftEmbedding(VOCAB, 2)
    emb.validate_ids(_ids(4, 2))
    bad = _ids(4, 2)
    bad[1, 1, 0] = 3  # field 1 has vocab 3
    with pytest.raises(ValueError, match="field 1: ids span"):
        emb.validate_ids(bad)
    with pytest.raises(ValueError, match=r"\[B, 3, K\]"):
        emb.validate_ids(bad[:, :2])


def test_sparse_gradients_match_dense_ones() -> None:
    ids, w = _ids(8, 2), torch.rand(8, 3, 2)
    grads = []
    for sparse in (False, True):
        torch.manual_seed(1)
        emb = SoftEmbedding(VOCAB, 4, sparse=sparse)
        emb(ids, w).pow(2).sum().backward()
        assert emb.table.weight.grad.is_sparse is sparse
        grads.append(emb.table.weight.grad.to_dense())
    torch.testing.assert_close(grads[0], grads[1])


def test_dense_embedding_scales_a_learned_vector_by_the_value() -> None:
    emb = DenseEmbedding(2, 3)
    x = torch.randn(4, 2)
    out = emb(x)
    assert out.shape == (4, 2, 3)
    torch.testing.assert_close(out[2, 1], x[2, 1] * emb.weight[1])


@pytest.mark.parametrize("num_dense", [0, 2])
def test_feature_embedding_puts_dense_rows_after_sparse_fields(num_dense: int) -> None:
    emb = FeatureEmbedding(_schema(num_dense), 4)
    batch = _batch(5, 2, num_dense)
    out = emb(batch)
    assert emb.num_features == 3 + num_dense and out.shape == (5, 3 + num_dense, 4)
    torch.testing.assert_close(out[:, :3], emb.fields(batch.ids, batch.weights))
    if num_dense:
        torch.testing.assert_close(out[:, 3:], emb.dense(batch.dense))


def test_feature_embedding_rejects_missing_dense() -> None:
    emb = FeatureEmbedding(_schema(2), 4)
    batch = _batch(3, 1, 0)
    with pytest.raises(ValueError, match="2 dense fields but batch.dense is None"):
        emb(batch)


def test_linear_term_is_bias_plus_per_id_weights_plus_dense() -> None:
    term = LinearTerm(_schema(2))
    with torch.no_grad():
        term.bias.fill_(0.3)
    batch = _batch(4, 2, 2)
    table = term.weights.fields.table.weight[:, 0]
    dense_w = term.weights.dense.weight[:, 0]
    offsets = (0, 5, 8)
    for b in range(4):
        expect = 0.3 + sum(
            batch.weights[b, f, k] * table[offsets[f] + batch.ids[b, f, k]]
            for f in range(3)
            for k in range(2)
        )
        expect = expect + (batch.dense[b] * dense_w).sum()
        torch.testing.assert_close(term(batch)[b], expect)


# -- MLP ----------------------------------------------------------------------------------


def test_mlp_shapes_and_options() -> None:
    mlp = MLP(6, (5, 4), out_dim=1)
    assert mlp(torch.randn(3, 6)).shape == (3, 1) and mlp.out_dim == 1
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in mlp.modules())
    full = MLP(6, (5,), dropout=0.5, batch_norm=True, activation="tanh")
    kinds = [type(m) for m in full.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout] and full.out_dim == 5
    assert MLP(6, ()).out_dim == 6
    with pytest.raises(ValueError, match="activation 'swish' unknown"):
        MLP(6, (5,), activation="swish")


# -- interactions -------------------------------------------------------------------------


def test_fm_equals_explicit_pairwise_sum() -> None:
    v = torch.randn(3, 4, 5)
    expect = torch.stack(
        [
            sum((v[b, i] * v[b, j]).sum() for i in range(4) for j in range(i + 1, 4))
            for b in range(3)
        ]
    )
    torch.testing.assert_close(fm_interaction(v), expect)
    torch.testing.assert_close(FMInteraction()(v), expect)


def test_cross_net_v1_layer() -> None:
    cross = CrossNet(6, 2)
    with torch.no_grad():
        cross.bias.normal_()
    x0 = torch.randn(4, 6)
    x1 = x0 * (x0 @ cross.weight[0])[:, None] + cross.bias[0] + x0
    x2 = x0 * (x1 @ cross.weight[1])[:, None] + cross.bias[1] + x1
    torch.testing.assert_close(cross(x0), x2)


def test_cross_net_v2_full_rank_layer() -> None:
    cross = CrossNetV2(6, 1)
    x0 = torch.randn(4, 6)
    w, b = cross.linears[0].weight, cross.linears[0].bias
    torch.testing.assert_close(cross(x0), x0 * (x0 @ w.T + b) + x0)


def test_cross_net_v2_low_rank_mixture_layer() -> None:
    cross = CrossNetV2(6, 1, low_rank=2, num_experts=3)
    with torch.no_grad():
        cross.bias.normal_()
    x0 = torch.randn(4, 6)
    logits = torch.stack([x0 @ cross.gates[0, e] for e in range(3)], dim=-1)
    gate = torch.softmax(logits, dim=-1)
    expect = x0.clone()
    for e in range(3):
        v, c, u = cross.v[0, e], cross.c[0, e], cross.u[0, e]
        h = torch.tanh(torch.tanh(x0 @ v) @ c.T)
        expect = expect + gate[:, e, None] * x0 * (h @ u.T + cross.bias[0])
    torch.testing.assert_close(cross(x0), expect)


def test_cin_one_layer_is_outer_product_then_conv() -> None:
    cin = CIN(3, (2,))
    x0 = torch.randn(4, 3, 5)
    w = cin.convs[0].weight[:, :, 0]  # [H_out, N * N]
    expect = torch.zeros(4, 2)
    for h in range(2):
        for i in range(3):
            for j in range(3):
                expect[:, h] += (w[h, i * 3 + j] * x0[:, i] * x0[:, j]).sum(dim=-1)
    torch.testing.assert_close(cin(x0), expect)


def test_cin_layers_are_concatenated() -> None:
    cin = CIN(3, (2, 4))
    assert cin(torch.randn(5, 3, 6)).shape == (5, 6) and cin.out_dim == 6


@pytest.mark.parametrize("residual", [True, False])
def test_self_attention_equals_explicit_softmax(residual: bool) -> None:
    att = SelfAttention(4, head_dim=3, num_heads=2, residual=residual)
    x = torch.randn(2, 5, 4)
    heads = []
    for h in range(2):
        cols = slice(3 * h, 3 * h + 3)
        q = x @ att.query.weight[cols].T
        k = x @ att.key.weight[cols].T
        v = x @ att.value.weight[cols].T
        heads.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(3), dim=-1) @ v)
    expect = torch.cat(heads, dim=-1)
    if residual:
        expect = expect + x @ att.residual.weight.T
    torch.testing.assert_close(att(x), torch.relu(expect))


def test_squeeze_excitation_equals_explicit_gate() -> None:
    se = SqueezeExcitation(6, reduction=3)
    v = torch.randn(4, 6, 5)
    w1, w2 = se.squeeze.weight, se.excite.weight  # [2, 6], [6, 2]
    a = torch.relu(torch.relu(v.mean(-1) @ w1.T) @ w2.T)
    torch.testing.assert_close(se(v), v * a[..., None])


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_equals_explicit_pairs(kind: str) -> None:
    bil = BilinearInteraction(4, 3, kind)
    v = torch.randn(2, 4, 3)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    out = bil(v)
    assert out.shape == (2, 6, 3) and bil.num_pairs == 6
    for p, (i, j) in enumerate(pairs):
        w = bil.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]]
        torch.testing.assert_close(out[:, p], (v[:, i] @ w) * v[:, j])
    with pytest.raises(ValueError, match="bilinear kind 'x' unknown"):
        BilinearInteraction(4, 3, "x")  # type: ignore[arg-type]


# -- every layer is twice differentiable ----------------------------------------------------

_LAYERS = {
    "cross": (lambda: CrossNet(4, 2), (3, 4)),
    "cross_v2": (lambda: CrossNetV2(4, 2), (3, 4)),
    "cross_v2_moe": (lambda: CrossNetV2(3, 1, low_rank=2, num_experts=2), (2, 3)),
    "cin": (lambda: CIN(3, (2, 2)), (2, 3, 4)),
    "attention": (lambda: SelfAttention(2, 1, 2), (1, 3, 2)),
    "senet": (lambda: SqueezeExcitation(3, 2), (2, 3, 4)),
    "bilinear": (lambda: BilinearInteraction(3, 4), (2, 3, 4)),
    "mlp": (lambda: MLP(4, (3,), out_dim=1, activation="tanh"), (3, 4)),
    "fm": (FMInteraction, (2, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(_LAYERS))
def test_layer_gradgradcheck(name: str) -> None:
    make, shape = _LAYERS[name]
    layer = make().double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    params = {k: p.detach().clone().requires_grad_() for k, p in layer.named_parameters()}

    def f(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, dict(zip(params, values)), (x,))

    assert torch.autograd.gradgradcheck(f, (x, *params.values()))
