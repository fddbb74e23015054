"""FiBiNET: squeeze-excitation re-weighting + bilinear pair interactions of both the raw
and the re-weighted embeddings -> MLP, plus a first-order term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import (
    MLP,
    BilinearInteraction,
    FeatureEmbedding,
    LinearTerm,
    SqueezeExcitation,
)
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class FiBiNETConfig:
    embedding_dim: int = 16
    bilinear_type: Literal["field_all", "field_each", "field_interaction"] = "field_interaction"
    reduction_ratio: int = 3
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class FiBiNET(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: FiBiNETConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FiBiNETConfig()
        self.linear = LinearTerm(schema, sparse=config.sparse_grad)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        n, d = self.embedding.num_features, config.embedding_dim
        self.senet = SqueezeExcitation(n, config.reduction_ratio)
        self.bilinear = BilinearInteraction(n, d, config.bilinear_type)
        self.bilinear_senet = BilinearInteraction(n, d, config.bilinear_type)
        self.mlp = MLP(
            2 * self.bilinear.num_pairs * d,
            config.hidden_units,
            dropout=config.dropout,
            batch_norm=config.batch_norm,
            out_dim=1,
        )

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        v = self.embedding(batch)  # [B, N, d]
        p = self.bilinear(v)  # [B, P, d]
        q = self.bilinear_senet(self.senet(v))  # [B, P, d]
        deep = self.mlp(torch.cat([p, q], dim=1).flatten(1)).squeeze(-1)
        return self.linear(batch) + deep
