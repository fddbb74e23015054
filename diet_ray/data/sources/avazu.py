"""Avazu click-through rate prediction (Kaggle, 2014): `train` / `train.csv`, CSV with header

    id, click, hour, C1, banner_pos, site_id, site_domain, site_category, app_id,
    app_domain, app_category, device_id, device_ip, device_model, device_type,
    device_conn_type, C14, C15, ..., C21

where hour is YYMMDDHH in UTC (14102100 = 2014-10-21 00:00). Input: one file or a folder;
in a folder the files whose names start with `train` and do not end in `.gz` are read in
name order (`test` has no click column; decompress `.gz` files first).

Canonical row: timestamp = the hour as epoch seconds; label = click (must be 0/1). Fields:
every column but id, click and hour, as categorical strings, plus `hour_of_day` ("0".."23")
and `weekday` ("0" Monday .. "6" Sunday) derived from hour.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.sources.base import (
    FieldSpec,
    Source,
    binary_label,
    check_rows,
    civil_seconds,
    input_files,
    require_columns,
)
from diet_ray.data.sources.csv_reader import csv_header, stream_csv

RAW_FIELDS = (
    "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
    "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", *(f"C{i}" for i in range(14, 22)),
)


def hour_seconds(column: pa.ChunkedArray, where: str, first_row: int) -> np.ndarray:
    """YYMMDDHH strings -> UTC epoch seconds; `DataError` naming the first bad row."""
    text = pc.fill_null(column, "")
    ok = pc.match_substring_regex(text, r"^\d{8}$").to_numpy(zero_copy_only=False)
    v = np.zeros(len(text), np.int64)
    v[ok] = pc.cast(text.filter(pa.array(ok)), pa.int64()).to_numpy()
    seconds, valid = civil_seconds(2000 + v // 1_000_000, v // 10_000 % 100, v // 100 % 100,
                                   v % 100)
    check_rows(ok & valid, where, first_row, "has hour that is not a valid YYMMDDHH", column)
    return seconds


class Avazu(Source):
    """The Avazu CTR log."""

    name = "avazu"
    spec = FieldSpec(categorical=(*RAW_FIELDS, "hour_of_day", "weekday"))

    def __init__(self, input_uri: str) -> None:
        self.fs, self.paths = input_files(
            input_uri, lambda n: n.startswith("train") and not n.endswith(".gz"),
            "Avazu train / train.csv files")

    def chunks(self) -> Iterator[pa.Table]:
        need = ["click", "hour", *RAW_FIELDS]
        types = {c: pa.string() for c in need}
        for path in self.paths:
            require_columns(csv_header(self.fs, path), need, path,
                            "Expected the Avazu train header (id,click,hour,C1,banner_pos,...).")
            offset = 0
            for t in stream_csv(self.fs, path, column_types=types, include_columns=need):
                seconds = hour_seconds(t.column("hour"), path, offset)
                cols = {
                    "timestamp": pa.array(seconds),
                    "label": binary_label(t.column("click"), path, "click", offset),
                    **{c: t.column(c) for c in RAW_FIELDS},
                    "hour_of_day": pa.array((seconds // 3600 % 24).astype(str)),
                    # 1970-01-01 was a Thursday: (days + 3) % 7 counts from Monday = 0
                    "weekday": pa.array(((seconds // 86400 + 3) % 7).astype(str)),
                }
                offset += t.num_rows
                yield pa.table(cols)
