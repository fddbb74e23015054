"""Soft one-hot embeddings: the one way every model reads a `SparseBatch`.

A field's embedding is ``sum_k weights[b, f, k] * E_f[ids[b, f, k]]`` (see
`diet_ray.data.batch`). It is computed as an `nn.Embedding` lookup times the weights,
summed over K, which is twice differentiable (needed by the bi-level inner loop) and
differentiable in `weights` (needed to learn a distilled row's id mixture).
`nn.EmbeddingBag(per_sample_weights=...)` is deliberately not used: in torch 2.13 its
backward has no derivative, so `create_graph=True` through it fails (DESIGN.md, lesson 6).

All F sparse fields share one table with per-field row offsets; ids must lie in
``[0, vocab_size_f)`` for their field (call `SoftEmbedding.validate_ids` when unsure: an
id past its field's vocabulary would silently read the next field's rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema

DEFAULT_INIT_STD = 1e-2


class SoftEmbedding(nn.Module):
    """Per-field soft embedding: ids, weights ``[B, F, K]`` -> ``[B, F, dim]``.

    `sparse=True` makes the table (an `nn.Embedding`) produce sparse gradients: train it
    with `torch.optim.SparseAdam` or plain SGD (`diet_ray.evaluate.train.make_optimizer`
    does the split). Sparse gradients are for plain training only: the bi-level inner
    loop wants the dense default.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        dim: int,
        *,
        sparse: bool = False,
        init_std: float = DEFAULT_INIT_STD,
    ) -> None:
        super().__init__()
        if not vocab_sizes or min(vocab_sizes) < 1:
            raise ValueError(
                f"vocab_sizes must be non-empty and >= 1 each, got {list(vocab_sizes)}"
            )
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        offsets = torch.tensor((0, *self.vocab_sizes[:-1]), dtype=torch.int64).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)  # [F]
        self.table = nn.Embedding(sum(self.vocab_sizes), dim, sparse=sparse)
        nn.init.normal_(self.table.weight, std=init_std)

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes)

    @property
    def dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """ids ``[B, F, K]`` int64, weights ``[B, F, K]`` float -> ``[B, F, dim]``."""
        rows = self.table(ids + self.offsets[:, None])  # [B, F, K, dim]
        return (rows * weights.unsqueeze(-1)).sum(dim=2)

    def validate_ids(self, ids: torch.Tensor) -> None:
        """Raise ValueError naming the first field whose ids leave ``[0, vocab_size)``."""
        if ids.dim() != 3 or ids.shape[1] != self.num_fields:
            raise ValueError(f"ids must be [B, {self.num_fields}, K], got {list(ids.shape)}")
        if ids.numel() == 0:
            return
        lo = ids.amin(dim=(0, 2)).tolist()
        hi = ids.amax(dim=(0, 2)).tolist()
        for f, (a, b, v) in enumerate(zip(lo, hi, self.vocab_sizes)):
            if a < 0 or b >= v:
                raise ValueError(
                    f"field {f}: ids span [{a}, {b}] but its vocab_size is {v}; "
                    "ids must lie in [0, vocab_size) (0 = padding / OOV)"
                )


class DenseEmbedding(nn.Module):
    """Dense fields as extra "fields": ``[B, D]`` -> ``[B, D, dim]``, row d = value_d * v_d."""

    def __init__(self, num_dense: int, dim: int, *, init_std: float = DEFAULT_INIT_STD) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_dense, dim) * init_std)  # [D, dim]

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        """dense ``[B, D]`` -> ``[B, D, dim]``."""
        return dense.unsqueeze(-1) * self.weight


class FeatureEmbedding(nn.Module):
    """Every feature of a batch as a row vector: ``SparseBatch`` -> ``[B, F + D, dim]``.

    Sparse fields come first (in schema order), then the D dense fields.
    """

    def __init__(
        self,
        schema: Schema,
        dim: int,
        *,
        sparse: bool = False,
        init_std: float = DEFAULT_INIT_STD,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        self.fields = SoftEmbedding(schema.vocab_sizes, dim, sparse=sparse, init_std=init_std)
        self.num_dense = schema.num_dense
        self.dense = (
            DenseEmbedding(self.num_dense, dim, init_std=init_std) if self.num_dense else None
        )

    @property
    def num_features(self) -> int:
        """N = F + D, the number of rows this layer emits per example."""
        return self.fields.num_fields + self.num_dense

    @property
    def dim(self) -> int:
        return self.fields.dim

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        """``SparseBatch`` -> ``[B, F + D, dim]``."""
        out = self.fields(batch.ids, batch.weights)
        if self.dense is None:
            return out
        if batch.dense is None or batch.dense.shape[-1] != self.num_dense:
            got = None if batch.dense is None else list(batch.dense.shape)
            raise ValueError(f"schema has {self.num_dense} dense fields but batch.dense is {got}")
        return torch.cat([out, self.dense(batch.dense)], dim=1)


class LinearTerm(nn.Module):
    """First-order (logistic-regression) term: ``bias + sum_f sum_k w * W_f[id] + sum_d c_d x_d``.

    A `FeatureEmbedding` of dimension 1, summed over features. Returns ``[B]``.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        sparse: bool = False,
        init_std: float = DEFAULT_INIT_STD,
    ) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(schema, 1, sparse=sparse, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        """``SparseBatch`` -> ``[B]``."""
        return self.weights(batch).sum(dim=(1, 2)) + self.bias
