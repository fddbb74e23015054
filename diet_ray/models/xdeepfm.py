"""xDeepFM: first-order term + compressed interaction network (CIN) + MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import CIN, MLP, FeatureEmbedding, LinearTerm
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class XDeepFMConfig:
    embedding_dim: int = 16
    cin_layer_sizes: tuple[int, ...] = (32, 32)
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class XDeepFM(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: XDeepFMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or XDeepFMConfig()
        self.linear = LinearTerm(schema, sparse=config.sparse_grad)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        n = self.embedding.num_features
        self.cin = CIN(n, config.cin_layer_sizes)
        self.cin_head = nn.Linear(self.cin.out_dim, 1)
        self.mlp = MLP(
            n * config.embedding_dim,
            config.hidden_units,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            out_dim=1,
        )

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        v = self.embedding(batch)  # [B, N, d]
        cin = self.cin_head(self.cin(v)).squeeze(-1)
        deep = self.mlp(v.flatten(1)).squeeze(-1)
        return self.linear(batch) + cin + deep
