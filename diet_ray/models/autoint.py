"""AutoInt: stacked multi-head self-attention over the feature embeddings -> logit.

``hidden_units`` non-empty adds a parallel MLP on the embeddings (AutoInt+).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import MLP, FeatureEmbedding, SelfAttention
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class AutoIntConfig:
    embedding_dim: int = 16
    num_attention_layers: int = 3
    num_heads: int = 2
    head_dim: int = 32
    attention_residual: bool = True
    attention_scale: bool = True
    hidden_units: tuple[int, ...] = ()
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class AutoInt(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: AutoIntConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AutoIntConfig()
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        n = self.embedding.num_features
        layers, width = [], config.embedding_dim
        for _ in range(config.num_attention_layers):
            layer = SelfAttention(
                width,
                config.head_dim,
                config.num_heads,
                residual=config.attention_residual,
                scale=config.attention_scale,
            )
            layers.append(layer)
            width = layer.out_dim
        self.attention = nn.Sequential(*layers)
        self.attention_head = nn.Linear(n * width, 1)
        self.mlp = (
            MLP(
                n * config.embedding_dim,
                config.hidden_units,
                dropout=config.dropout,
                batch_norm=config.batch_norm,
                out_dim=1,
            )
            if config.hidden_units
            else None
        )

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        v = self.embedding(batch)  # [B, N, d]
        logit = self.attention_head(self.attention(v).flatten(1)).squeeze(-1)
        if self.mlp is not None:
            logit = logit + self.mlp(v.flatten(1)).squeeze(-1)
        return logit
