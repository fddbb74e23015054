"""The generic CSV / Parquet source: a user's own logs, described by a small YAML file.

    timestamp: ts                 # column name
    timestamp_format: unix        # unix | unix_ms | iso | a strftime pattern ("%Y-%m-%d %H:%M")
    label: click                  # column name
    positive: [1, "true"]         # optional: values that count as positive (default [1, "1", true])
    categorical: [user, item]
    multi_hot: {genres: "|"}      # optional: column -> separator
    dense: [price]                # optional
    hashed: [item]                # optional: categorical fields to hash instead of count
    delimiter: ","                # optional, CSV only

`--input` is one file or a folder/prefix of files (read in name order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs
from diet_ray.data.sources.base import FieldSpec, Source, require_columns, split_tokens
from diet_ray.data.sources.csv_reader import stream_csv

FORMATS = ("unix", "unix_ms", "iso")
KNOWN_KEYS = {"timestamp", "timestamp_format", "label", "positive", "categorical", "multi_hot",
              "dense", "hashed", "delimiter"}


@dataclass(frozen=True)
class GenericConfig:
    """The parsed YAML description of a user's table."""

    timestamp: str
    label: str
    categorical: tuple[str, ...]
    timestamp_format: str = "unix"
    positive: tuple[Any, ...] = (1, "1", True, "true")
    multi_hot: dict[str, str] = field(default_factory=dict)
    dense: tuple[str, ...] = ()
    hashed: tuple[str, ...] = ()
    delimiter: str = ","

    @staticmethod
    def load(path: str) -> GenericConfig:
        fs, p = open_fs(path)
        try:
            with fs.open(p, "rb") as f:
                raw = yaml.safe_load(f)
        except FileNotFoundError:
            raise DataError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a mapping of keys (timestamp, label, categorical, ...)")
        unknown = set(raw) - KNOWN_KEYS
        if unknown:
            raise DataError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
        for key in ("timestamp", "label", "categorical"):
            if key not in raw:
                raise DataError(f"{path}: missing required key {key!r}")
        cfg = GenericConfig(
            timestamp=str(raw["timestamp"]),
            label=str(raw["label"]),
            categorical=tuple(raw["categorical"] or ()),
            timestamp_format=str(raw.get("timestamp_format", "unix")),
            positive=tuple(raw.get("positive", (1, "1", True, "true"))),
            multi_hot=dict(raw.get("multi_hot") or {}),
            dense=tuple(raw.get("dense") or ()),
            hashed=tuple(raw.get("hashed") or ()),
            delimiter=str(raw.get("delimiter", ",")),
        )
        stray = set(cfg.hashed) - set(cfg.categorical)
        if stray:
            raise DataError(f"{path}: 'hashed' names {sorted(stray)}, which are not categorical")
        return cfg


def parse_timestamps(column: pa.Array, fmt: str, where: str) -> pa.Array:
    """Convert a raw timestamp column to int64 epoch seconds, or fail naming the bad row."""
    try:
        if fmt in ("unix", "unix_ms"):
            values = pc.cast(column, pa.float64())
            if fmt == "unix_ms":
                values = pc.divide(values, 1000.0)
            out = pc.cast(pc.floor(values), pa.int64())
        else:
            text = pc.cast(column, pa.string())
            if fmt == "iso":
                parsed = pc.cast(text, pa.timestamp("s"))
            else:
                parsed = pc.strptime(text, format=fmt, unit="s")
            out = pc.cast(parsed, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"{where}: cannot parse timestamps as {fmt!r} ({str(e).splitlines()[0]}); "
            "set timestamp_format to unix, unix_ms, iso or a strftime pattern"
        ) from None
    if out.null_count:
        row = int(np.flatnonzero(pc.is_null(out).to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where}: row {row} has an empty or unparsable timestamp")
    return out


class Generic(Source):
    """A CSV or Parquet table described by a `GenericConfig`."""

    def __init__(self, input_uri: str, config: GenericConfig, fmt: str) -> None:
        if fmt not in ("csv", "parquet"):
            raise DataError(f"unknown generic format {fmt!r}: use csv or parquet")
        self.name = fmt
        self.cfg = config
        self.fmt = fmt
        self.fs, root = open_fs(input_uri)
        if not self.fs.exists(root):
            raise DataError(f"{input_uri}: no such file or folder")
        if self.fs.isdir(root):
            ext = (".csv", ".tsv", ".txt", ".gz") if fmt == "csv" else (".parquet", ".pq")
            self.paths = sorted(p for p in self.fs.find(root) if p.endswith(ext))
            if not self.paths:
                raise DataError(f"{input_uri}: the folder holds no {fmt} files")
        else:
            self.paths = [root]
        self.spec = FieldSpec(
            categorical=config.categorical,
            multi_hot=tuple(config.multi_hot),
            dense=config.dense,
            hashed=config.hashed,
        )

    def _raw(self) -> Iterator[tuple[str, int, pa.Table]]:
        for path in self.paths:
            offset = 0
            if self.fmt == "csv":
                tables = stream_csv(self.fs, path, delimiter=self.cfg.delimiter)
            else:
                tables = self._parquet(path)
            for t in tables:
                yield path, offset, t
                offset += t.num_rows

    def _parquet(self, path: str) -> Iterator[pa.Table]:
        try:
            with self.fs.open(path, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=262_144):
                    yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(
                f"{path}: not a readable Parquet file ({str(e).splitlines()[0]}); "
                "it may be truncated or corrupt"
            ) from None

    def _label(self, column: pa.ChunkedArray, where: str) -> pa.Array:
        text = pc.utf8_lower(pc.cast(column, pa.string()))
        positive = pa.array(sorted({str(v).lower() for v in self.cfg.positive}))
        values = set(pc.unique(text).to_pylist())
        if None in values:
            raise DataError(f"{where}: column {self.cfg.label!r} has empty values")
        allowed = set(positive.to_pylist()) | {"0", "false", "0.0"}
        stray = sorted(values - allowed)
        if stray:
            raise DataError(
                f"{where}: column {self.cfg.label!r} is not binary: values {stray[:5]} are "
                f"neither positive {positive.to_pylist()} nor 0/false; list the positive "
                "values under 'positive' in the config, and map the rest to 0"
            )
        return pc.cast(pc.is_in(text, value_set=positive), pa.int8())

    def chunks(self) -> Iterator[pa.Table]:
        c = self.cfg
        need = [c.timestamp, c.label, *c.categorical, *c.multi_hot, *c.dense]
        for path, offset, t in self._raw():
            where = f"{path} (rows from {offset})"
            require_columns(t.column_names, need, path,
                            "Fix the column names in the config or the file header.")
            cols: dict[str, pa.Array] = {
                "timestamp": parse_timestamps(t.column(c.timestamp).combine_chunks(),
                                              c.timestamp_format, where),
                "label": self._label(t.column(c.label), where),
            }
            for name in c.categorical:
                cols[name] = pc.cast(t.column(name), pa.string())
            for name, sep in c.multi_hot.items():
                cols[name] = split_tokens(t.column(name), sep)
            for name in c.dense:
                try:
                    cols[name] = pc.cast(t.column(name), pa.float64())
                except pa.ArrowInvalid:
                    raise DataError(f"{where}: dense column {name!r} is not numeric") from None
            yield pa.table(cols)
