"""AutoInt's interacting layer: multi-head self-attention over feature rows, with residual.

For each head: ``softmax(Q K^T / sqrt(a)) V`` with ``Q, K, V = X W_q, X W_k, X W_v``
(``a`` = per-head size); heads are concatenated, a linear projection of X is added
(residual) and ReLU applied. Written with explicit matmuls (not
`scaled_dot_product_attention`) so that it is twice differentiable on every backend.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SelfAttention(nn.Module):
    """``X [B, N, in_dim]`` -> ``[B, N, num_heads * head_dim]``."""

    def __init__(
        self,
        in_dim: int,
        head_dim: int,
        num_heads: int,
        *,
        residual: bool = True,
        scale: bool = True,
    ) -> None:
        super().__init__()
        out = head_dim * num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False) if residual else None
        self.out_dim = out

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, H * a]`` -> ``[B, H, N, a]``."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim]`` -> ``[B, N, out_dim]``."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = q @ k.transpose(-1, -2)  # [B, H, N, N]
        if self.scale:
            scores = scores / math.sqrt(self.head_dim)
        out = torch.softmax(scores, dim=-1) @ v  # [B, H, N, a]
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.out_dim)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)
