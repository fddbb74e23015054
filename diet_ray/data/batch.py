"""`SparseBatch`, the one batch type every model consumes, and the one collate that builds it.

Layout (B rows, F sparse fields, K id slots per field, D dense fields)::

    ids           [B, F, K] int64    per-field ids (0 = padding / OOV)
    weights       [B, F, K] float32  soft one-hot over the K ids; the field embedding is
                                     sum_k weights[b, f, k] * E_f[ids[b, f, k]]
    dense         [B, D]    float32  standardised dense fields, or None when D == 0
    labels        [B]       float32  in [0, 1]; soft labels allowed
    sample_weight [B]       float32  per-row loss weight

A real categorical value is K-slot 0 with weight 1 (other slots weight 0). A multi-hot
field with n values spreads weight 1/n over its first n slots (mean pooling). A distilled
memory row uses all K slots with softmax weights: real and distilled rows share this one
format, which is what lets one memory train any architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa
import torch

from diet_ray.data.schema import Schema

LABEL = "label"
TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class SparseBatch:
    """A batch of rows in the soft one-hot layout drawn in the module docstring."""

    ids: torch.Tensor
    weights: torch.Tensor
    dense: torch.Tensor | None
    labels: torch.Tensor
    sample_weight: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device: torch.device | str) -> SparseBatch:
        return SparseBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                for f in fields(self)
            }
        )

    def select(self, index: torch.Tensor | slice) -> SparseBatch:
        """Rows `index` of every tensor (a view for slices)."""
        return SparseBatch(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
                for f in fields(self)
            }
        )

    def with_labels(self, labels: torch.Tensor) -> SparseBatch:
        return replace(self, labels=labels)

    @staticmethod
    def concat(batches: list[SparseBatch]) -> SparseBatch:
        """Concatenate along rows; K is padded to the widest batch."""
        k = max(b.ids.shape[2] for b in batches)
        padded = [_pad_k(b, k) for b in batches]
        return SparseBatch(
            ids=torch.cat([b.ids for b in padded]),
            weights=torch.cat([b.weights for b in padded]),
            dense=None if padded[0].dense is None else torch.cat([b.dense for b in padded]),
            labels=torch.cat([b.labels for b in padded]),
            sample_weight=torch.cat([b.sample_weight for b in padded]),
        )


def _pad_k(batch: SparseBatch, k: int) -> SparseBatch:
    extra = k - batch.ids.shape[2]
    if extra == 0:
        return batch
    return replace(
        batch,
        ids=torch.nn.functional.pad(batch.ids, (0, extra)),
        weights=torch.nn.functional.pad(batch.weights, (0, extra)),
    )


def _multi_hot(column: object, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A list column (Arrow list array or numpy object array of arrays) -> ids, weights [B, width]."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, (pa.ListArray, pa.LargeListArray)):
        offsets = column.offsets.to_numpy(zero_copy_only=False)
        offsets = offsets - offsets[0]
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(offsets)
    else:  # numpy object array of per-row arrays (Ray's "numpy" batch format)
        rows = list(column)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        values = np.concatenate(rows).astype(np.int64) if lengths.sum() else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = len(lengths)
    lengths = np.minimum(lengths, width)
    pos = np.arange(width)[None, :]
    mask = pos < lengths[:, None]
    ids = np.zeros((n, width), dtype=np.int64)
    src = (offsets[:-1, None] + pos)[mask]
    ids[mask] = values[src]
    weights = mask / np.maximum(lengths, 1)[:, None]
    return ids, weights.astype(np.float32)


def _column(batch: pa.Table | dict, name: str) -> object:
    try:
        return batch[name] if isinstance(batch, dict) else batch.column(name)
    except KeyError:
        have = list(batch.keys()) if isinstance(batch, dict) else batch.column_names
        raise KeyError(f"batch has no column {name!r}; columns: {have}") from None


def _numpy(column: object) -> np.ndarray:
    if isinstance(column, (pa.ChunkedArray, pa.Array)):
        return column.to_numpy(zero_copy_only=False)
    return np.asarray(column)


def collate(batch: pa.Table | dict[str, np.ndarray], schema: Schema) -> SparseBatch:
    """Turn a batch of prepared rows (a pyarrow Table or Ray's dict of numpy arrays) into a
    `SparseBatch` with K = `schema.max_len`; `sample_weight` column optional (default 1)."""
    k = schema.max_len
    parts_ids, parts_w = [], []
    for f in schema.sparse:
        col = _column(batch, f.name)
        if f.kind == "multi_hot":
            ids, w = _multi_hot(col, k)
        else:
            ids = np.zeros((len(col), k), dtype=np.int64)
            w = np.zeros((len(col), k), dtype=np.float32)
            ids[:, 0] = _numpy(col)
            w[:, 0] = 1.0
        parts_ids.append(ids)
        parts_w.append(w)
    labels = _numpy(_column(batch, LABEL)).astype(np.float32)
    has_sw = "sample_weight" in (batch.keys() if isinstance(batch, dict) else batch.column_names)
    sample_weight = (
        _numpy(_column(batch, "sample_weight")).astype(np.float32)
        if has_sw
        else np.ones_like(labels)
    )
    dense = None
    if schema.dense:
        cols = [
            (_numpy(_column(batch, d.name)).astype(np.float32) - d.mean) / d.std for d in schema.dense
        ]
        dense = torch.from_numpy(np.nan_to_num(np.stack(cols, axis=1), nan=0.0))
    return SparseBatch(
        ids=torch.from_numpy(np.stack(parts_ids, axis=1)),
        weights=torch.from_numpy(np.stack(parts_w, axis=1)),
        dense=dense,
        labels=torch.from_numpy(labels),
        sample_weight=torch.from_numpy(sample_weight),
    )
