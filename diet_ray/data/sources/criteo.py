"""Criteo display advertising: the Kaggle challenge `train.txt` (Criteo Labs, 2014) and the
Criteo 1TB click logs (`day_0` ... `day_23`). Headerless tab-separated text, 40 columns:

    label, I1..I13 (integer counts, may be empty), C1..C26 (32-bit hex hashes, may be empty)

Input: one file or a folder; in a folder the files named `day_<n>` or `train` (optionally
`.txt` / `.tsv`) are read in natural name order (day_2 before day_10); `test.txt`, which
has no label, is skipped. Compressed (`.gz`) files must be decompressed first.

The logs carry no clock, but rows are in time order: timestamp = the row's global index
(0, 1, 2, ... across the files), so `--stage-by rows:N` or `stages:S` cuts contiguous
blocks (time windows such as `day` are meaningless here). label = column 0 (must be 0/1).
Fields: C1..C26 categorical (empty = missing), I1..I13 dense, raw values as float64 by
default; `prepare` standardises them, but they are heavy-tailed counts, so the option
`log_dense: true` (or keyword `log_dense=True`) applies sign(x) * log1p(|x|) first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.sources.base import FieldSpec, Source, binary_label, input_files
from diet_ray.data.sources.csv_reader import stream_csv

DENSE = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ["label", *DENSE, *CATEGORICAL]
FILE_NAME = re.compile(r"(day_\d+|train)(\.txt|\.tsv)?$")


class Criteo(Source):
    """Criteo click logs; timestamps are row positions."""

    name = "criteo"
    spec = FieldSpec(categorical=CATEGORICAL, dense=DENSE)

    def __init__(self, input_uri: str, log_dense: bool = False) -> None:
        self.log_dense = bool(log_dense)
        self.fs, self.paths = input_files(input_uri, lambda n: bool(FILE_NAME.fullmatch(n)),
                                          "Criteo day_<n> or train.txt files")

    def chunks(self) -> Iterator[pa.Table]:
        types = {"label": pa.string()} | {c: pa.float64() for c in DENSE} | {
            c: pa.string() for c in CATEGORICAL}
        row = 0
        for path in self.paths:
            offset = 0
            for t in stream_csv(self.fs, path, delimiter="\t", column_names=COLUMNS,
                                column_types=types):
                cols = {
                    "timestamp": pa.array(np.arange(row, row + t.num_rows, dtype=np.int64)),
                    "label": binary_label(t.column("label"), path, "label", offset),
                    **{c: t.column(c) for c in CATEGORICAL},
                }
                for c in DENSE:
                    x = t.column(c)
                    if self.log_dense:
                        x = pc.multiply(pc.sign(x), pc.log1p(pc.abs(x)))
                    cols[c] = x
                row += t.num_rows
                offset += t.num_rows
                yield pa.table(cols)
