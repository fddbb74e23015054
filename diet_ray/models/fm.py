"""Factorization machine: first-order term + ``sum_{i<j} <v_i, v_j>`` over all features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import FeatureEmbedding, LinearTerm, fm_interaction
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class FMConfig:
    embedding_dim: int = 16
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class FM(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: FMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FMConfig()
        self.linear = LinearTerm(schema, sparse=config.sparse_grad)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        return self.linear(batch) + fm_interaction(self.embedding(batch))
