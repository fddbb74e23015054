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

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError


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


def binary_label(column: pa.ChunkedArray | pa.Array, where: str, name: str) -> pa.Array:
    """A 0/1 numeric label column as int8, or `DataError` naming the first bad row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        raise DataError(f"{where}: label column {name!r} is not numeric") from None
    bad = np.flatnonzero(~np.isin(values, (0.0, 1.0)))
    if len(bad):
        raise DataError(
            f"{where}: label column {name!r} must be 0 or 1; row {int(bad[0])} has "
            f"{values[bad[0]]!r}"
        )
    return pa.array(values.astype(np.int8))
