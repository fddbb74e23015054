"""Reading prepared stages: as a Ray `Dataset` (streamed, distributed) or in-process.

Both paths read exactly the shards that `schema.json` lists, through the fsspec filesystem
of the dataset's URI, so a dataset on local disk, `s3://` or `memory://` reads the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, open_fs, to_pyarrow
from diet_ray.data.schema import Schema


def _stage_list(stages: int | Iterable[int]) -> list[int]:
    return [stages] if isinstance(stages, int) else list(stages)


def stage_paths(uri: str, schema: Schema, stages: int | Iterable[int]) -> list[str]:
    """Shard paths (without protocol) of `stages`, in stage then shard order."""
    _, root = open_fs(uri)
    paths = []
    for s in _stage_list(stages):
        info = schema.stage(s)
        if info.rows == 0 or not info.files:
            raise DataError(f"{uri}: stage {s} is empty; choose a stage with rows")
        paths += [join(root, f) for f in info.files]
    if not paths:
        raise DataError(f"{uri}: no stages selected")
    return paths


def read_stages(uri: str, stages: int | Iterable[int], schema: Schema | None = None, **kwargs):
    """Stage(s) of a prepared dataset as a Ray `Dataset` (`ray.data.read_parquet`).

    `kwargs` go to `read_parquet` (e.g. `override_num_blocks`, `ray_remote_args`).

    The shards are read by Ray Data's file-based Parquet datasource, not the ListFiles ->
    ReadFiles chain that recent Ray uses by default: that chain lists the files and reads
    their footers in remote tasks of its own before the first block, which cost 5-12 s per
    500,000-row stage on a 2-core machine (fresh worker processes importing pyarrow and
    pandas) against 0.3 s here. The paths come from `schema.json`, so there is nothing to
    list.
    """
    import ray.data

    schema = schema or Schema.load(uri)
    fs, _ = open_fs(uri)
    paths = stage_paths(uri, schema, stages)
    ctx = ray.data.DataContext.get_current()
    previous = getattr(ctx, "use_datasource_v2", None)
    if previous is not None:
        ctx.use_datasource_v2 = False  # read at call time: only this dataset's plan
    try:
        return ray.data.read_parquet(paths, filesystem=to_pyarrow(fs), **kwargs)
    finally:
        if previous is not None:
            ctx.use_datasource_v2 = previous


def read_stage_table(uri: str, stages: int | Iterable[int], schema: Schema | None = None,
                     verify: bool = False) -> pa.Table:
    """Stage(s) read in-process into one Arrow table; `verify` checks each shard's SHA-256."""
    schema = schema or Schema.load(uri)
    fs, root = open_fs(uri)
    tables = []
    for s in _stage_list(stages):
        info = schema.stage(s)
        for rel, digest in zip(info.files, info.sha256):
            path = join(root, rel)
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                raise DataError(f"{path}: shard listed in schema.json is missing") from None
            if verify and hashlib.sha256(data).hexdigest() != digest:
                raise DataError(f"{path}: checksum mismatch, the shard is damaged; prepare again")
            try:
                tables.append(pq.read_table(pa.BufferReader(data)))
            except pa.ArrowInvalid as e:
                raise DataError(f"{path}: unreadable Parquet shard ({e}); prepare again") from None
    return pa.concat_tables(tables)


def iter_sparse_batches(dataset, schema: Schema, batch_size: int, **kwargs) -> Iterator[SparseBatch]:
    """Stream a Ray `Dataset` (or `DataIterator`) of prepared rows as `SparseBatch`es."""
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow", **kwargs):
        yield collate(batch, schema)


def table_batches(table: pa.Table, schema: Schema, batch_size: int) -> Iterator[SparseBatch]:
    """An in-memory Arrow table as consecutive `SparseBatch`es (no Ray)."""
    for start in range(0, table.num_rows, batch_size):
        yield collate(table.slice(start, batch_size), schema)


def sample_stage_rows(uri: str, schema: Schema, stage: int, rows: int, seed: int) -> pa.Table:
    """A seeded random sample of up to `rows` rows from the stage's last shard (in-process;
    reads one shard, never the whole stage)."""
    info = schema.stage(stage)
    fs, root = open_fs(uri)
    with fs.open(join(root, info.files[-1]), "rb") as f:
        table = pq.read_table(f)
    if table.num_rows <= rows:
        return table
    pick = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
    return table.take(pa.array(pick))
