"""Factorization-machine pairwise interaction: ``sum_{i<j} <v_i, v_j>`` in O(N d)."""

from __future__ import annotations

import torch
from torch import nn


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """``v [B, N, d]`` -> ``[B]``: ``0.5 * sum_d ((sum_n v)^2 - sum_n v^2)``."""
    square_of_sum = v.sum(dim=1).pow(2)  # [B, d]
    sum_of_square = v.pow(2).sum(dim=1)  # [B, d]
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=-1)


class FMInteraction(nn.Module):
    """Module form of `fm_interaction`: ``[B, N, d]`` -> ``[B]`` (no parameters)."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return fm_interaction(v)
