"""Explicit feature crossing: DCN's cross network (v1) and DCN-V2's matrix cross network.

Both map ``x0 [B, d]`` to ``x_L [B, d]`` with ``x_{l+1} = x0 * f_l(x_l) + x_l``:

- v1 (`CrossNet`):   ``f_l(x) = (w_l . x) + b_l``  (a scalar per row times x0, plus a bias)
  i.e. ``x_{l+1} = x0 * (w_l . x_l) + b_l + x_l``;
- v2 (`CrossNetV2`): ``f_l(x) = W_l x + b_l``       (a full d x d matrix), or, with
  ``low_rank=r``, the mixture of E low-rank experts of DCN-Mix:
  ``x_{l+1} = sum_e g_e(x_l) * x0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b_l) + x_l``,
  gates ``g = softmax_e(G_e x_l)``.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossNet(nn.Module):
    """DCN (v1) cross network: ``[B, d]`` -> ``[B, d]`` after `num_layers` layers."""

    def __init__(self, in_dim: int, num_layers: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_layers, in_dim))  # w_l, [L, d]
        self.bias = nn.Parameter(torch.zeros(num_layers, in_dim))  # b_l, [L, d]
        nn.init.xavier_normal_(self.weight)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0 [B, d]`` -> ``[B, d]``."""
        x = x0
        for w, b in zip(self.weight, self.bias):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 cross network: ``[B, d]`` -> ``[B, d]``; full-rank, or low-rank mixture."""

    def __init__(
        self,
        in_dim: int,
        num_layers: int,
        *,
        low_rank: int | None = None,
        num_experts: int = 1,
    ) -> None:
        super().__init__()
        self.low_rank = low_rank
        if low_rank is None:
            self.linears = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(num_layers))
            return
        if low_rank < 1 or num_experts < 1:
            raise ValueError(
                f"low_rank and num_experts must be >= 1, got {low_rank}, {num_experts}"
            )
        shape = (num_layers, num_experts)
        self.v = nn.Parameter(torch.empty(*shape, in_dim, low_rank))  # [L, E, d, r]
        self.c = nn.Parameter(torch.empty(*shape, low_rank, low_rank))  # [L, E, r, r]
        self.u = nn.Parameter(torch.empty(*shape, in_dim, low_rank))  # [L, E, d, r]
        self.bias = nn.Parameter(torch.zeros(num_layers, in_dim))  # [L, d]
        self.gates = nn.Parameter(torch.empty(num_layers, num_experts, in_dim))  # [L, E, d]
        for p in (self.v, self.c, self.u, self.gates):
            for matrix in p.data.view(-1, *p.shape[-2:]):
                nn.init.xavier_normal_(matrix)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0 [B, d]`` -> ``[B, d]``."""
        x = x0
        if self.low_rank is None:
            for linear in self.linears:
                x = x0 * linear(x) + x
            return x
        for v, c, u, b, g in zip(self.v, self.c, self.u, self.bias, self.gates):
            h = torch.tanh(torch.einsum("bd,edr->ber", x, v))  # [B, E, r]
            h = torch.tanh(torch.einsum("ber,esr->bes", h, c))  # [B, E, r]
            experts = x0.unsqueeze(1) * (torch.einsum("bes,eds->bed", h, u) + b)  # [B, E, d]
            gate = torch.softmax(x @ g.T, dim=-1)  # [B, E]
            x = (gate.unsqueeze(-1) * experts).sum(dim=1) + x
        return x
