"""A plain multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    """``[B, in_dim]`` -> ``[B, out_dim]`` (``out_dim`` = last hidden size, or `out_dim`).

    `out_dim`, when given, adds a final plain Linear (no activation): e.g. ``out_dim=1``
    for a logit head. Batch norm is off by default: its running statistics are updated
    in place, which the functional inner loop does not want. No in-place activations, so
    the module is twice differentiable.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_units: Sequence[int],
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation {activation!r} unknown; choose from {sorted(_ACTIVATIONS)}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> ``[B, out_dim]``."""
        return self.layers(x)
