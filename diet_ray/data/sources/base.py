"""The contract every raw-format source follows: raw files in, canonical Arrow tables out.

A canonical table has exactly these columns, in any order:

    timestamp   int64          seconds since the epoch (or the row's position when the
                               format has no clock, e.g. Criteo: row order is time)
    label       int8           0 or 1
    <cat>       string         one column per categorical field (null = missing)
    <multi>     list<string>   one column per multi-hot field
    <dense>     float64        one column per dense field (null/NaN = missing)

Sources stream: `chunks()` yields bounded-size tables and may be called more than once
(`prepare` makes two passes). Bad input raises `DataError` naming the file, column or row.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs


@dataclass(frozen=True)
class FieldSpec:
    """Which canonical columns are categorical, multi-hot and dense."""

    categorical: tuple[str, ...]
    multi_hot: tuple[str, ...] = ()
    dense: tuple[str, ...] = ()
    hashed: tuple[str, ...] = ()  # categorical fields to hash rather than count (huge vocabularies)

    def columns(self) -> list[str]:
        return ["timestamp", "label", *self.categorical, *self.multi_hot, *self.dense]


class Source(ABC):
    """A raw-format reader. Subclasses set `name` and `spec` and implement `chunks()`."""

    name: str
    spec: FieldSpec

    @abstractmethod
    def chunks(self) -> Iterator[pa.Table]:
        """Yield canonical tables (see module docstring), each of bounded size."""

    def check(self, table: pa.Table, where: str) -> pa.Table:
        """Validate one canonical chunk: required columns present and labels binary."""
        missing = [c for c in self.spec.columns() if c not in table.column_names]
        if missing:
            raise DataError(f"{where}: source {self.name!r} produced no column(s) {missing}")
        return table


def require_columns(have: list[str], need: list[str], where: str, hint: str = "") -> None:
    """Fail with one clear message when input columns are missing or misnamed."""
    missing = [c for c in need if c not in have]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; found {have}."
            + (f" {hint}" if hint else " Check the file layout or rename the columns.")
        )


def split_tokens(column: pa.ChunkedArray | pa.Array, sep: str) -> pa.ListArray:
    """Split a string column on `sep` into list<string>, dropping empty tokens and nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lists = pc.split_pattern(pc.fill_null(pc.cast(column, pa.string()), ""), pattern=sep)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    parent = pc.list_parent_indices(lists)
    keep = pc.not_equal(flat, "")
    flat, parent = flat.filter(keep), parent.filter(keep)
    counts = np.bincount(parent.to_numpy(zero_copy_only=False), minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def binary_label(
    column: pa.ChunkedArray | pa.Array, where: str, name: str, first_row: int = 0
) -> pa.Array:
    """A 0/1 numeric label column as int8, or `DataError` naming the first bad row
    (numbered from `first_row`: pass a chunk's offset in its file for file-wide numbers)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        raise DataError(f"{where}: label column {name!r} is not numeric") from None
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if len(bad):
        raise DataError(
            f"{where}: label column {name!r} must be 0 or 1; row {first_row + int(bad[0])} has "
            f"{values[bad[0]]!r}"
        )
    return pa.array(values.astype(np.int8))


def natural_key(path: str) -> list:
    """Sort key putting "day_2" before "day_10" (digit runs compare as numbers)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def input_files(
    input_uri: str, keep: Callable[[str], bool], what: str
) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """`(fs, paths)`: `input_uri` itself when it is a file, else every file below the folder
    whose base name passes `keep`, in natural name order. No match is a `DataError`."""
    fs, root = open_fs(input_uri)
    if not fs.exists(root):
        raise DataError(f"{input_uri}: no such file or folder")
    if not fs.isdir(root):
        return fs, [root]
    paths = sorted((p for p in fs.find(root) if keep(p.rsplit("/", 1)[-1])), key=natural_key)
    if not paths:
        raise DataError(f"{input_uri}: the folder holds no {what}")
    return fs, paths


def civil_seconds(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, hour: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """UTC epoch seconds of calendar dates (and hours), plus a mask of the valid ones
    (month 1-12, day within its month, hour 0-23); invalid rows get an arbitrary value."""
    year, month, day = (np.asarray(a, dtype=np.int64) for a in (year, month, day))
    ok = (month >= 1) & (month <= 12) & (day >= 1)
    start = ((year - 1970) * 12 + np.where(ok, month, 1) - 1).astype("datetime64[M]")
    first = start.astype("datetime64[D]")
    length = ((start + 1).astype("datetime64[D]") - first).astype(np.int64)
    ok &= day <= length
    seconds = (first.astype(np.int64) + np.where(ok, day, 1) - 1) * 86400
    if hour is not None:
        hour = np.asarray(hour, dtype=np.int64)
        ok &= (hour >= 0) & (hour <= 23)
        seconds = seconds + np.where(ok, hour, 0) * 3600
    return seconds, ok


def check_rows(
    ok: np.ndarray, where: str, first_row: int, problem: str, values: object = None
) -> None:
    """`DataError` naming the first row where `ok` is False ("<where>: row N <problem>"),
    with that row's value from `values` (any indexable) when given."""
    bad = np.flatnonzero(~np.asarray(ok, dtype=bool))
    if len(bad):
        i = int(bad[0])
        value = values[i] if values is not None else None
        value = value.as_py() if isinstance(value, pa.Scalar) else value
        found = f" (found {value!r})" if values is not None else ""
        raise DataError(f"{where}: row {first_row + i} {problem}{found}")


class SideTable:
    """A small table keyed by an int64 id column, for joining onto log chunks: `take(ids)`
    gives its rows (less the key) in `ids` order, all-null (an empty list for the columns
    in `multi_hot`, which are split on their separator) for ids it lacks. Keys are sorted
    once, so each chunk costs a binary search, not a hash-table build."""

    def __init__(self, table: pa.Table, key: str, multi_hot: dict[str, str] | None = None) -> None:
        multi_hot = multi_hot or {}
        keys = table.column(key).to_numpy()
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        cols = {}
        for name in table.column_names:
            if name == key:
                continue
            col = table.column(name).combine_chunks()
            if name in multi_hot:
                col = split_tokens(col, multi_hot[name])
                col = pa.concat_arrays([col, pa.array([[]], col.type)])
            else:
                col = pa.concat_arrays([col, pa.nulls(1, col.type)])
            cols[name] = col
        self.table = pa.table(cols)  # one extra last row: the "missing" row
        self.missing = table.num_rows

    def take(self, ids: np.ndarray) -> pa.Table:
        pos = np.minimum(np.searchsorted(self.keys, ids), max(len(self.keys) - 1, 0))
        found = (self.keys[pos] == ids) if len(self.keys) else np.zeros(len(ids), bool)
        return self.table.take(pa.array(np.where(found, self.order[pos], self.missing)))
