"""Small hand-built schema, batches and configs for the distillation unit tests."""

from __future__ import annotations

import torch

from diet_ray.config import load_config
from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import DenseField, Schema, SparseField


def tiny_schema() -> Schema:
    return Schema(
        dataset="tiny",
        sparse=(SparseField("user", "categorical", 7), SparseField("item", "categorical", 9),
                SparseField("tags", "multi_hot", 5, max_len=2)),
        dense=(DenseField("price", 0.0, 1.0),),
        stages=(), stage_by="rows:10",
    )


def real_batch(n: int, seed: int) -> SparseBatch:
    """n real rows of `tiny_schema()`: K = 2, categorical in slot 0, tags multi-hot."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, 3, 2, dtype=torch.int64)
    weights = torch.zeros(n, 3, 2)
    ids[:, 0, 0] = torch.randint(1, 7, (n,), generator=g)
    ids[:, 1, 0] = torch.randint(1, 9, (n,), generator=g)
    ids[:, 2] = torch.randint(1, 5, (n, 2), generator=g)
    weights[:, :2, 0] = 1.0
    weights[:, 2] = 0.5
    labels = (torch.rand(n, generator=g) < 0.5).float()
    dense = torch.randn(n, 1, generator=g)
    return SparseBatch(ids, weights, dense, labels, torch.ones(n))


def tiny_config(**overrides):
    base = ["bilevel.inner_archs=[dnn, fm]", "bilevel.inner_steps=2", "bilevel.outer_steps=3",
            "bilevel.outer_batch=16", "continual.batch_size=8", "influence.probe_rows=32",
            "influence.clusters=2", "influence.key_dim=4", "memory.budget=0.2",
            "train.num_workers=1"]
    return load_config(None, base + [f"{k}={v}" for k, v in overrides.items()])
