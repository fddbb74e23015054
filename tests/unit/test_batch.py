"""SparseBatch and the one collate: K from the schema, multi-hot mean weights, dense
standardisation, and the same result from Arrow tables and Ray's numpy batches."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.schema import DenseField, Schema, SparseField, StageInfo


def tiny_schema() -> Schema:
    return Schema(
        dataset="t",
        sparse=(
            SparseField("user", "categorical", 5),
            SparseField("tags", "multi_hot", 4, max_len=3),
        ),
        dense=(DenseField("price", mean=10.0, std=2.0),),
        stages=(StageInfo(0, 0, 1, 2, 1, ("stage=0000/part-00000.parquet",), ("x",)),),
        stage_by="rows:2",
    )


def tiny_table() -> pa.Table:
    return pa.table({
        "timestamp": pa.array([1, 2], pa.int64()),
        "label": pa.array([1.0, 0.0], pa.float32()),
        "user": pa.array([3, 0], pa.int64()),
        "tags": pa.array([[1, 2], []], pa.list_(pa.int32())),
        "price": pa.array([12.0, None], pa.float32()),
    })


def test_collate_layout_hand_checked():
    b = collate(tiny_table(), tiny_schema())
    assert b.ids.shape == (2, 2, 3) and b.weights.shape == (2, 2, 3)
    assert b.ids[0].tolist() == [[3, 0, 0], [1, 2, 0]]
    assert b.weights[0].tolist() == [[1, 0, 0], [0.5, 0.5, 0]]
    assert b.weights[1, 1].tolist() == [0, 0, 0]  # empty multi-hot: all padding
    assert b.dense.tolist() == [[1.0], [0.0]]  # (12-10)/2; missing -> 0
    assert b.labels.tolist() == [1.0, 0.0] and b.sample_weight.tolist() == [1.0, 1.0]
    assert b.ids.dtype == torch.int64 and b.weights.dtype == torch.float32


def test_numpy_batches_collate_identically():
    t = tiny_table()
    as_numpy = {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}
    a, b = collate(t, tiny_schema()), collate(as_numpy, tiny_schema())
    for name in ("ids", "weights", "dense", "labels", "sample_weight"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_missing_column_is_named():
    with pytest.raises(KeyError, match="tags"):
        collate(tiny_table().drop(["tags"]), tiny_schema())


def test_select_concat_and_pad_k():
    b = collate(tiny_table(), tiny_schema())
    narrow = SparseBatch(b.ids[:, :, :1], b.weights[:, :, :1], b.dense, b.labels, b.sample_weight)
    both = SparseBatch.concat([narrow, b])
    assert both.ids.shape == (4, 2, 3) and len(both) == 4
    assert torch.equal(both.select(slice(2, 4)).ids, b.ids)
    assert np.allclose(both.weights[:2, :, 1:].numpy(), 0)
