"""FiBiNET's bilinear interaction: ``p_ij = (v_i W) * v_j`` for every pair i < j.

``kind`` chooses how W is shared: ``"field_all"`` (one d x d matrix), ``"field_each"``
(one per feature i) or ``"field_interaction"`` (one per pair (i, j)).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

BilinearKind = Literal["field_all", "field_each", "field_interaction"]
BILINEAR_KINDS: tuple[str, ...] = ("field_all", "field_each", "field_interaction")


class BilinearInteraction(nn.Module):
    """``V [B, N, d]`` -> ``[B, N (N - 1) / 2, d]`` (pairs in ``torch.triu_indices`` order)."""

    def __init__(
        self, num_features: int, dim: int, kind: BilinearKind = "field_interaction"
    ) -> None:
        super().__init__()
        if kind not in BILINEAR_KINDS:
            raise ValueError(f"bilinear kind {kind!r} unknown; choose from {list(BILINEAR_KINDS)}")
        left, right = torch.triu_indices(num_features, num_features, offset=1)
        self.register_buffer("left", left, persistent=False)  # [P]
        self.register_buffer("right", right, persistent=False)  # [P]
        self.kind = kind
        count = {"field_all": 1, "field_each": num_features, "field_interaction": len(left)}[kind]
        self.weight = nn.Parameter(torch.empty(count, dim, dim))  # [1 | N | P, d, d]
        for w in self.weight.data:
            nn.init.xavier_normal_(w)

    @property
    def num_pairs(self) -> int:
        return int(self.left.numel())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, N, d]`` -> ``[B, P, d]``."""
        vi, vj = v[:, self.left], v[:, self.right]  # [B, P, d]
        if self.kind == "field_all":
            return (vi @ self.weight[0]) * vj
        w = self.weight[self.left] if self.kind == "field_each" else self.weight
        return torch.einsum("bpd,pde->bpe", vi, w) * vj
