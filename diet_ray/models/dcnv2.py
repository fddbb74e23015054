"""DCN-V2: matrix cross network (optionally a low-rank mixture of experts) with an MLP,
either in parallel (outputs concatenated) or stacked (MLP on the cross output)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import MLP, CrossNetV2, FeatureEmbedding
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class DCNv2Config:
    embedding_dim: int = 16
    num_cross_layers: int = 3
    low_rank: int | None = None
    num_experts: int = 1
    structure: Literal["parallel", "stacked"] = "parallel"
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    batch_norm: bool = False
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class DCNv2(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: DCNv2Config | None = None) -> None:
        super().__init__()
        self.config = config = config or DCNv2Config()
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, sparse=config.sparse_grad)
        width = self.embedding.num_features * config.embedding_dim
        self.cross = CrossNetV2(
            width, config.num_cross_layers, low_rank=config.low_rank, num_experts=config.num_experts
        )
        self.mlp = MLP(
            width, config.hidden_units, dropout=config.dropout, batch_norm=config.batch_norm
        )
        parallel = config.structure == "parallel" and bool(config.hidden_units)
        self.head = nn.Linear(width + self.mlp.out_dim if parallel else self.mlp.out_dim, 1)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(1)  # [B, N * d]
        if self.config.structure == "stacked":
            h = self.mlp(self.cross(x0))
        elif self.config.hidden_units:
            h = torch.cat([self.cross(x0), self.mlp(x0)], dim=-1)
        else:
            h = self.cross(x0)
        return self.head(h).squeeze(-1)
