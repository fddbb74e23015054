"""xDeepFM's compressed interaction network (CIN).

Layer k keeps H_k feature maps ``X^k [B, H_k, d]``:
``X^k_h = sum_{i, j} W^k_{h, i, j} (X^{k-1}_i * X^0_j)`` (element-wise over d), computed
as the outer product over maps ``[B, H_{k-1} * N, d]`` followed by a 1x1 convolution
without bias (as in the paper: a bias would be summed d times into a constant feature).
Each layer's maps are sum-pooled over d; the pooled vectors of all layers are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CIN(nn.Module):
    """``X0 [B, N, d]`` -> ``[B, sum(layer_sizes)]`` (sum-pooled maps of every layer)."""

    def __init__(self, num_features: int, layer_sizes: Sequence[int]) -> None:
        super().__init__()
        widths = [num_features, *layer_sizes]
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[k] * num_features, widths[k + 1], kernel_size=1, bias=False)
            for k in range(len(layer_sizes))
        )
        self.out_dim = sum(layer_sizes)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``[B, N, d]`` -> ``[B, sum(layer_sizes)]``."""
        b, _, d = x0.shape
        x = x0
        pooled = []
        for conv in self.convs:
            z = torch.einsum("bhd,bnd->bhnd", x, x0).reshape(b, -1, d)  # [B, H*N, d]
            x = conv(z)  # [B, H_k, d]
            pooled.append(x.sum(dim=-1))
        return torch.cat(pooled, dim=-1)
