"""Deep & Cross Network (v1): cross network and MLP in parallel on the flat embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import MLP, CrossNet, FeatureEmbedding
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class DCNConfig:
    embedding_dim: int = 16
    num_cross_layers: int = 3
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class DCN(nn.Module):
    """``SparseBatch`` -> logits ``[B]``; ``hidden_units=()`` leaves the cross network alone."""

    def __init__(self, schema: Schema, config: DCNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DCNConfig()
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        width = self.embedding.num_features * config.embedding_dim
        self.cross = CrossNet(width, config.num_cross_layers)
        self.mlp = MLP(
            width, config.hidden_units, dropout=config.dropout, batch_norm=config.batch_norm
        )
        self.head = nn.Linear(width + self.mlp.out_dim if config.hidden_units else width, 1)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(1)  # [B, N * d]
        parts = [self.cross(x0), self.mlp(x0)] if self.config.hidden_units else [self.cross(x0)]
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)
