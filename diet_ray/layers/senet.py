"""FiBiNET's squeeze-excitation layer: re-weight each feature row by a learned gate.

``z = mean_d(V)`` ``[B, N]`` -> ``a = relu(W2 relu(W1 z))`` ``[B, N]`` -> ``V * a[..., None]``,
with ``W1 [N, r]``, ``W2 [r, N]``, ``r = max(1, N // reduction)``.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """``[B, N, d]`` -> ``[B, N, d]`` (rows scaled by their excitation weights)."""

    def __init__(self, num_features: int, reduction: int = 3) -> None:
        super().__init__()
        hidden = max(1, num_features // reduction)
        self.squeeze = nn.Linear(num_features, hidden, bias=False)
        self.excite = nn.Linear(hidden, num_features, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        z = v.mean(dim=-1)  # [B, N]
        a = torch.relu(self.excite(torch.relu(self.squeeze(z))))  # [B, N]
        return v * a.unsqueeze(-1)
