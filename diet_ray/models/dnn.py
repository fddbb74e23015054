"""DNN: concatenated feature embeddings -> MLP -> logit."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import MLP, FeatureEmbedding
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class DNNConfig:
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class DNN(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: DNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DNNConfig()
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        self.mlp = MLP(
            self.embedding.num_features * config.embedding_dim,
            config.hidden_units,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            out_dim=1,
        )

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        return self.mlp(self.embedding(batch).flatten(1)).squeeze(-1)
