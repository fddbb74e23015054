"""Logistic regression: ``logit = bias + sum of the first-order weights of the row's features``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.layers import LinearTerm
from diet_ray.models.checks import check_config


@dataclass(frozen=True)
class LRConfig:
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        check_config(self)


class LR(nn.Module):
    """``SparseBatch`` -> logits ``[B]``."""

    def __init__(self, schema: Schema, config: LRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LRConfig()
        self.linear = LinearTerm(schema, sparse=config.sparse_grad)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        return self.linear(batch)
