"""The model zoo: every registered model on a tiny hand-built schema.

Expected seeded logits live in ``tests/unit/data/model_logits.json``. After a deliberate
change to a model's initialisation or forward pass, regenerate them with

    python tests/unit/test_models.py --regenerate

and commit the new JSON together with the change (say why in the commit message).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import DenseField, Schema, SparseField
from diet_ray.models import MODELS, build_model, model_config

EXPECTED = Path(__file__).parent / "data" / "model_logits.json"
NAMES = sorted(MODELS)

# 3 categorical fields + 1 multi-hot field (max_len 3) + 2 dense fields.
SCHEMA = Schema(
    dataset="toy",
    sparse=(
        SparseField("user", "categorical", 11),
        SparseField("item", "categorical", 7),
        SparseField("category", "categorical", 4),
        SparseField("genres", "multi_hot", 6, max_len=3),
    ),
    dense=(DenseField("age", 30.0, 10.0), DenseField("price", 5.0, 2.0)),
    stages=(),
    stage_by="rows",
)


def random_batch(b: int, k: int = 3, seed: int = 0, soft: bool = True) -> SparseBatch:
    """A batch of `b` rows over SCHEMA. soft=True: softmax weights over all K slots (a
    distilled row); soft=False: real rows (categorical: slot 0, weight 1; multi-hot: 1..K
    values with mean-pooling weights)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, v, (b, k), generator=g) for v in SCHEMA.vocab_sizes], 1)
    if soft:
        weights = torch.softmax(torch.randn(b, 4, k, generator=g) * 2, dim=-1)
    else:
        weights = torch.zeros(b, 4, k)
        weights[:, :3, 0] = 1.0
        n = torch.randint(1, k + 1, (b,), generator=g)
        weights[:, 3] = (torch.arange(k) < n[:, None]) / n[:, None]
        ids = ids * (weights > 0)
    return SparseBatch(
        ids=ids,
        weights=weights,
        dense=torch.randn(b, 2, generator=g),
        labels=torch.rand(b, generator=g),
        sample_weight=torch.rand(b, generator=g) + 0.5,
    )


def _build(name: str, seed: int = 0, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, SCHEMA, overrides)


def _perturb(model: torch.nn.Module) -> None:
    """Move every parameter off its (often zero / tiny) init so comparisons are not trivial."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def _loss(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """Sample-weighted BCE with soft labels, written out so it is differentiable in both."""
    per_row = F.softplus(logits) - batch.labels * logits
    return (batch.sample_weight * per_row).mean()


def seeded_logits(name: str) -> list[float]:
    model = _build(name, seed=0)
    with torch.no_grad():
        return model(random_batch(4, seed=123)).tolist()


# -- every model --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_output_is_one_logit_per_row(name: str) -> None:
    model = _build(name)
    out = model(random_batch(5))
    assert out.shape == (5,) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_soft_one_hot_equals_hard_ids(name: str) -> None:
    model = _build(name)
    _perturb(model)
    hard = random_batch(6, k=1, soft=False)  # K=1, weight 1: a plain id per field
    junk = random_batch(6, k=2, seed=9).ids
    soft = replace(
        hard,
        ids=torch.cat([hard.ids, junk], dim=2),
        weights=torch.cat([hard.weights, torch.zeros(6, 4, 2)], dim=2),
    )
    torch.testing.assert_close(model(soft), model(hard), rtol=0, atol=1e-6)

    real = random_batch(6, k=3, soft=False)  # multi-hot mean pooling, padded to K=5
    padded = replace(
        real,
        ids=torch.cat([real.ids, junk], dim=2),
        weights=torch.cat([real.weights, torch.zeros(6, 4, 2)], dim=2),
    )
    torch.testing.assert_close(model(padded), model(real), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_unrolled_inner_loop_reaches_memory_weights_labels_and_sample_weights(name: str) -> None:
    model = _build(name)
    memory = random_batch(8, seed=1)
    weights = memory.weights.clone().requires_grad_()
    labels = memory.labels.clone().requires_grad_()
    sample_weight = memory.sample_weight.clone().requires_grad_()
    memory = replace(memory, weights=weights, labels=labels, sample_weight=sample_weight)
    params = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
    for _ in range(3):
        inner = _loss(functional_call(model, params, (memory,)), memory)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        params = {k: p - 0.5 * g for (k, p), g in zip(params.items(), grads)}
    real = random_batch(16, k=3, seed=2, soft=False)
    outer = _loss(functional_call(model, params, (real,)), real)
    for g in torch.autograd.grad(outer, [weights, labels, sample_weight]):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_seeded_forward_matches_stored_logits(name: str) -> None:
    expected = json.loads(EXPECTED.read_text())
    assert sorted(expected) == NAMES, "model set changed: regenerate (see module docstring)"
    torch.testing.assert_close(
        torch.tensor(seeded_logits(name)), torch.tensor(expected[name]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
def test_sparse_grad_gives_sparse_table_gradients_equal_to_dense(name: str) -> None:
    batch = random_batch(8, seed=3)
    grads = []
    for sparse in (False, True):
        model = _build(name, sparse_grad=sparse)
        _loss(model(batch), batch).backward()
        tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
        assert bool(tables) is sparse
        assert all(p.grad.is_sparse for p in tables)
        grads.append({k: p.grad.to_dense() for k, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_schema_without_dense_fields(name: str) -> None:
    schema = replace(SCHEMA, dense=())
    model = build_model(name, schema)
    assert model(replace(random_batch(3), dense=None)).shape == (3,)


# -- architecture recipes against hand computations -----------------------------------------


def test_lr_is_bias_plus_sum_of_per_id_weights() -> None:
    model = _build("lr")
    _perturb(model)
    batch = random_batch(3, soft=False)
    table = model.linear.weights.fields.table.weight[:, 0]
    offsets = torch.tensor([0, 11, 18, 22])
    for b in range(3):
        ids = batch.ids[b] + offsets[:, None]
        expect = model.linear.bias + (batch.weights[b] * table[ids]).sum()
        expect = expect + (batch.dense[b] * model.linear.weights.dense.weight[:, 0]).sum()
        torch.testing.assert_close(model(batch)[b], expect)


def test_fm_is_linear_plus_explicit_pairwise_sum() -> None:
    model = _build("fm")
    _perturb(model)
    batch = random_batch(3)
    v = model.embedding(batch)  # [B, 6, d]
    pairs = sum((v[:, i] * v[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    torch.testing.assert_close(model(batch), model.linear(batch) + pairs)


def test_deepfm_is_linear_plus_fm_plus_mlp() -> None:
    model = _build("deepfm")
    _perturb(model)
    batch = random_batch(3)
    v = model.embedding(batch)
    pairs = sum((v[:, i] * v[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    deep = model.mlp(v.flatten(1))[:, 0]
    torch.testing.assert_close(model(batch), model.linear(batch) + pairs + deep)


def test_dcn_one_cross_layer_alone() -> None:
    model = _build("dcn", num_cross_layers=1, hidden_units=())
    _perturb(model)
    batch = random_batch(3)
    x0 = model.embedding(batch).flatten(1)
    w, b = model.cross.weight[0], model.cross.bias[0]
    x1 = x0 * (x0 @ w)[:, None] + b + x0
    torch.testing.assert_close(model(batch), model.head(x1)[:, 0])


def test_dcnv2_one_cross_layer_alone() -> None:
    model = _build("dcnv2", num_cross_layers=1, hidden_units=())
    _perturb(model)
    batch = random_batch(3)
    x0 = model.embedding(batch).flatten(1)
    lin = model.cross.linears[0]
    x1 = x0 * (x0 @ lin.weight.T + lin.bias) + x0
    torch.testing.assert_close(model(batch), model.head(x1)[:, 0])


def test_wide_deep_is_wide_plus_deep() -> None:
    model = _build("wide_deep")
    batch = random_batch(3)
    deep = model.deep(model.embedding(batch).flatten(1))[:, 0]
    torch.testing.assert_close(model(batch), model.wide(batch) + deep)


# -- configuration variants -----------------------------------------------------------------

VARIANTS = [
    ("dnn", {"hidden_units": [8, 4], "embedding_dim": 4}),
    ("dnn", {"batch_norm": True, "dropout": 0.2}),
    ("dcn", {"hidden_units": ()}),
    ("dcnv2", {"low_rank": 4, "num_experts": 3}),
    ("dcnv2", {"structure": "stacked"}),
    ("dcnv2", {"structure": "stacked", "hidden_units": ()}),
    ("autoint", {"hidden_units": (16,), "attention_residual": False, "attention_scale": False}),
    ("fibinet", {"bilinear_type": "field_all"}),
    ("fibinet", {"bilinear_type": "field_each", "reduction_ratio": 2}),
    ("xdeepfm", {"cin_layer_sizes": (4, 4, 4)}),
]


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=lambda v: str(v))
def test_config_variants_train(name: str, overrides: dict) -> None:
    model = _build(name, **overrides)
    batch = random_batch(6)
    out = model(batch)
    assert out.shape == (6,)
    _loss(out, batch).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))


# -- registry --------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert NAMES == sorted(
        ["lr", "fm", "dnn", "wide_deep", "deepfm", "dcn", "dcnv2", "xdeepfm", "autoint", "fibinet"]
    )
    for entry in MODELS.values():
        assert entry.config().sparse_grad is False


def test_build_model_accepts_dict_dataclass_or_none() -> None:
    assert build_model("dnn", SCHEMA).config == model_config("dnn")
    cfg = model_config("dnn", hidden_units=[8], embedding_dim=4)
    assert cfg.hidden_units == (8,)
    assert build_model("dnn", SCHEMA, cfg).config is cfg
    assert build_model("dnn", SCHEMA, {"hidden_units": [8], "embedding_dim": 4}).config == cfg


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*'autoint'.*'xdeepfm'"):
        build_model("resnet", SCHEMA)


def test_unknown_config_key_is_named_with_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"\['hiden_units'\].*valid keys:.*'hidden_units'"):
        build_model("dnn", SCHEMA, {"hiden_units": (8,)})


def test_wrong_config_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="takes a DNNConfig"):
        build_model("dnn", SCHEMA, model_config("fm"))


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("dnn", {"embedding_dim": 0}, "DNNConfig.embedding_dim must be an int >= 1"),
        ("dnn", {"dropout": 1.0}, r"DNNConfig.dropout must lie in \[0, 1\)"),
        ("dnn", {"hidden_units": (8, 0)}, "DNNConfig.hidden_units must be a list"),
        ("dnn", {"sparse_grad": 1}, "DNNConfig.sparse_grad must be a bool"),
        ("dcnv2", {"structure": "serial"}, "structure must be one of 'parallel', 'stacked'"),
        ("dcnv2", {"low_rank": 0}, "low_rank must be an int >= 1 or None"),
    ],
)
def test_invalid_config_values_fail_fast(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model_config(name, **overrides)


def regenerate() -> None:
    """Write the seeded logits of every registered model to EXPECTED."""
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    EXPECTED.write_text(json.dumps({n: seeded_logits(n) for n in NAMES}, indent=2) + "\n")
    print(f"wrote {EXPECTED}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/unit/test_models.py --regenerate")
    regenerate()
