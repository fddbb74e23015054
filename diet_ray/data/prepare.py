"""`diet-ray prepare`: raw source -> stage-partitioned Parquet + `schema.json`, streaming.

Two passes over the source, each holding one chunk at a time (plus at most
`4 * rows_per_shard` encoded rows waiting to be written):

1. count vocabularies, dense statistics and the timestamp histogram, validate labels;
2. encode ids, assign stages, write shards.

Output is written under `<output>/_tmp/` and moved into place only when every shard is
written; `schema.json` goes last. A crash leaves no `schema.json`, so no half-written
dataset looks complete; the next run clears `_tmp/` and starts over.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diet_ray.data.errors import DataError
from diet_ray.data.fs import join, move_file, open_fs, storage_errors, write_bytes
from diet_ray.data.schema import SCHEMA_FILE, DenseField, Schema, SparseField, StageInfo, stage_dir
from diet_ray.data.sources.base import Source
from diet_ray.data.staging import StageAssigner, StageRule, TimestampHistogram
from diet_ray.data.vocab import FieldCounter, IdMapper
from diet_ray.progress import Progress

log = logging.getLogger("diet_ray")
TMP = "_tmp"


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one `prepare` run (see `diet-ray prepare --help`)."""

    stage_by: str = "day"
    min_count: int = 1
    max_vocab: int = 2_000_000
    hash_buckets: int = 1 << 20
    rows_per_shard: int = 500_000
    overwrite: bool = False
    dataset: str = ""


def _check_chunk(source: Source, table: pa.Table) -> None:
    source.check(table, f"source {source.name}")
    ts = table.column("timestamp")
    if ts.null_count:
        raise DataError(
            f"source {source.name}: {ts.null_count} row(s) have no timestamp; every row needs one"
        )
    labels = table.column("label")
    bad = pc.invert(pc.is_in(labels, value_set=pa.array([0, 1], labels.type)))
    if labels.null_count or pc.any(bad).as_py():
        raise DataError(
            f"source {source.name}: column 'label' must be 0 or 1 (found "
            f"{pc.unique(labels).to_pylist()[:10]}); set which values count as positive"
        )


class _Scan:
    """Everything the first pass learns."""

    def __init__(self, source: Source, max_vocab: int) -> None:
        spec = source.spec
        self.counters = {
            name: FieldCounter(name, max_vocab, hashed=name in spec.hashed)
            for name in (*spec.categorical, *spec.multi_hot)
        }
        self.dense_sum = defaultdict(float)
        self.dense_sq = defaultdict(float)
        self.dense_n = defaultdict(int)
        self.hist = TimestampHistogram()

    def add(self, table: pa.Table, spec) -> None:
        for name, counter in self.counters.items():
            counter.add(table.column(name))
        for name in spec.dense:
            x = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
            x = x[~np.isnan(x)]
            self.dense_sum[name] += float(x.sum())
            self.dense_sq[name] += float((x * x).sum())
            self.dense_n[name] += len(x)
        self.hist.add(table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64))

    def dense_fields(self, spec) -> tuple[DenseField, ...]:
        out = []
        for name in spec.dense:
            n = max(self.dense_n[name], 1)
            mean = self.dense_sum[name] / n
            var = max(self.dense_sq[name] / n - mean * mean, 0.0)
            out.append(DenseField(name, mean, float(np.sqrt(var)) or 1.0))
        return tuple(out)


def _encode(table: pa.Table, source: Source, mappers: dict[str, IdMapper]) -> pa.Table:
    spec = source.spec
    cols: dict[str, pa.Array] = {
        "timestamp": table.column("timestamp").cast(pa.int64()),
        "label": table.column("label").cast(pa.float32()),
    }
    for name in spec.categorical:
        cols[name] = pa.array(mappers[name](table.column(name).combine_chunks()))
    for name in spec.multi_hot:
        lists = table.column(name).combine_chunks()
        ids = mappers[name](pc.list_flatten(lists)).astype(np.int32)
        offsets = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(np.nan_to_num(offsets.astype(float)))])
        cols[name] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids))
    for name in spec.dense:
        cols[name] = table.column(name).cast(pa.float32())
    return pa.table(cols)


class _ShardWriter:
    """Buffers encoded rows per stage and writes Parquet shards under the temp prefix."""

    def __init__(self, fs, tmp_root: str, rows_per_shard: int) -> None:
        self.fs, self.tmp_root, self.rows_per_shard = fs, tmp_root, rows_per_shard
        self.buffers: dict[int, list[pa.Table]] = defaultdict(list)
        self.buffered: dict[int, int] = defaultdict(int)
        self.files: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self.rows: dict[int, int] = defaultdict(int)
        self.positives: dict[int, int] = defaultdict(int)
        self.bounds: dict[int, tuple[int, int]] = {}

    def add(self, stage: int, part: pa.Table) -> None:
        self.buffers[stage].append(part)
        self.buffered[stage] += part.num_rows
        ts = part.column("timestamp")
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        old = self.bounds.get(stage, (lo, hi))
        self.bounds[stage] = (min(old[0], lo), max(old[1], hi))
        self.rows[stage] += part.num_rows
        self.positives[stage] += int(pc.sum(part.column("label")).as_py() or 0)
        if self.buffered[stage] >= self.rows_per_shard:
            self.flush(stage)
        elif sum(self.buffered.values()) >= 4 * self.rows_per_shard:
            self.flush_all()

    def flush(self, stage: int) -> None:
        """Write the stage's buffered rows as shards of at most `rows_per_shard` rows."""
        if not self.buffers[stage]:
            return
        table = pa.concat_tables(self.buffers.pop(stage))
        self.buffered[stage] = 0
        for start in range(0, table.num_rows, self.rows_per_shard):
            sink = io.BytesIO()
            pq.write_table(table.slice(start, self.rows_per_shard), sink, compression="zstd")
            data = sink.getvalue()
            rel = f"{stage_dir(stage)}/part-{len(self.files[stage]):05d}.parquet"
            write_bytes(self.fs, join(self.tmp_root, rel), data)
            self.files[stage].append((rel, hashlib.sha256(data).hexdigest()))

    def flush_all(self) -> None:
        for stage in list(self.buffers):
            self.flush(stage)


def _clear(fs, path: str) -> None:
    if fs.exists(path):
        fs.rm(path, recursive=True)


def prepare(source: Source, output: str, opts: PrepareOptions) -> Schema:
    """Prepare `source` into `output` (any fsspec URI); return the committed schema."""
    with storage_errors(output):
        fs, root = open_fs(output)
        try:
            return _prepare(source, output, opts)
        finally:  # success or failure, nothing stays under the temp prefix
            _clear(fs, join(root, TMP))


def _prepare(source: Source, output: str, opts: PrepareOptions) -> Schema:
    rule = StageRule.parse(opts.stage_by)
    fs, root = open_fs(output)
    schema_path = join(root, SCHEMA_FILE)
    if fs.exists(schema_path):
        if not opts.overwrite:
            raise DataError(
                f"{output} already holds a prepared dataset; pass --overwrite to replace it "
                "or choose another --output"
            )
        fs.rm(schema_path)  # from here on the old dataset no longer looks complete
    tmp_root = join(root, TMP)
    _clear(fs, tmp_root)
    write_bytes(fs, join(tmp_root, "_write_check"), b"")  # fail now, not after a long scan
    fs.rm(join(tmp_root, "_write_check"))
    spec = source.spec

    scan = _Scan(source, opts.max_vocab)
    progress = Progress(f"prepare {source.name}: scan")
    for table in source.chunks():
        _check_chunk(source, table)
        scan.add(table, spec)
        progress.update(table.num_rows)
    progress.finish()
    if scan.hist.total == 0:
        raise DataError(f"source {source.name}: the input has no rows")

    vocabularies = {
        name: (None if c.hashed else c.vocabulary(opts.min_count))
        for name, c in scan.counters.items()
    }
    mappers = {name: IdMapper(v, opts.hash_buckets) for name, v in vocabularies.items()}
    assign = StageAssigner(rule, scan.hist)
    writer = _ShardWriter(fs, tmp_root, opts.rows_per_shard)
    oov = defaultdict(int)
    progress = Progress(f"prepare {source.name}: write", total=scan.hist.total)
    for table in source.chunks():
        _check_chunk(source, table)
        encoded = _encode(table, source, mappers)
        for name in spec.categorical:
            oov[name] += int((encoded.column(name).to_numpy() == 0).sum())
        stages = assign(encoded.column("timestamp").to_numpy())
        order = np.argsort(stages, kind="stable")
        sorted_stages = stages[order]
        cuts = np.flatnonzero(np.diff(sorted_stages)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(order)]):
            writer.add(int(sorted_stages[lo]), encoded.take(pa.array(order[lo:hi])))
        progress.update(table.num_rows)
    writer.flush_all()
    progress.finish()
    written = [rel for files in writer.files.values() for rel, _ in files]
    for name, vocab in vocabularies.items():
        if vocab is not None:
            written.append(f"vocab/{name}.json")
            write_bytes(fs, join(tmp_root, written[-1]), json.dumps(vocab).encode())
    schema = Schema(
        dataset=opts.dataset or source.name,
        source=source.name,
        stage_by=rule.text,
        sparse=tuple(
            SparseField(
                name=name,
                kind="multi_hot" if name in spec.multi_hot else "categorical",
                vocab_size=mappers[name].vocab_size,
                max_len=scan.counters[name].max_len if name in spec.multi_hot else 1,
                hashed=vocabularies[name] is None,
                oov_rows=oov.get(name, 0),
            )
            for name in (*spec.categorical, *spec.multi_hot)
        ),
        dense=scan.dense_fields(spec),
        stages=tuple(
            StageInfo(
                index=s,
                start=writer.bounds[s][0],
                end=writer.bounds[s][1],
                rows=writer.rows[s],
                positives=writer.positives[s],
                files=tuple(f for f, _ in writer.files[s]),
                sha256=tuple(h for _, h in writer.files[s]),
            )
            for s in range(assign.num_stages)
            if writer.rows[s] > 0
        ),
    )
    # commit: replace any old stage folders and vocabularies, then write the schema last
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("stage=") or name == "vocab":
            fs.rm(entry, recursive=True)
    for rel in written:
        move_file(fs, join(tmp_root, rel), join(root, rel))
    write_bytes(fs, schema_path, schema.to_json().encode())
    log.info(
        "prepared %s: %d rows in %d stages -> %s", schema.dataset, schema.total_rows,
        len(schema.stages), output,
    )
    return schema
