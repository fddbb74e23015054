"""Taobao UserBehavior (Zhu et al., "Learning Tree-based Deep Model for Recommender
Systems", KDD 2018; Tianchi dataset 649): `UserBehavior.csv`, headerless CSV

    user, item, category, behavior, timestamp

with behavior one of pv (page view), buy, cart, fav and timestamp in Unix seconds.
Input: one file or a folder of `.csv` files (read in name order).

Canonical row: label = 1 when behavior is in `positive` (default buy, cart, fav), 0 for the
rest (pv); any other behavior value is an error. Fields: user, item, category. Options (also
the keys of an optional YAML config): `positive`, a list of behaviors; `time_range`,
`[start, end)` in epoch seconds: rows outside it are dropped (the release has a few rows far
outside its 2017-11-25..2017-12-03 window, which would become tiny stages under `day`
staging; default: keep every row).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError
from diet_ray.data.sources.base import FieldSpec, Source, check_rows, input_files
from diet_ray.data.sources.csv_reader import stream_csv

COLUMNS = ["user", "item", "category", "behavior", "timestamp"]
BEHAVIORS = ("pv", "buy", "cart", "fav")


class Taobao(Source):
    """The Taobao UserBehavior log."""

    name = "taobao"
    spec = FieldSpec(categorical=("user", "item", "category"))

    def __init__(self, input_uri: str,
                 positive: tuple[str, ...] | list[str] = ("buy", "cart", "fav"),
                 time_range: tuple[int, int] | list[int] | None = None) -> None:
        stray = set(positive) - set(BEHAVIORS)
        if stray or not positive:
            raise DataError(f"taobao: positive must list behaviors from {BEHAVIORS}, "
                            f"got {positive}")
        if time_range is not None and len(time_range) != 2:
            raise DataError(f"taobao: time_range must be [start, end], got {time_range}")
        self.positive = pa.array(sorted(positive))
        self.time_range = tuple(int(x) for x in time_range) if time_range else None
        self.fs, self.paths = input_files(input_uri, lambda n: n.endswith(".csv"),
                                          "Taobao UserBehavior .csv files")

    def chunks(self) -> Iterator[pa.Table]:
        types = {c: pa.string() for c in COLUMNS} | {"timestamp": pa.int64()}
        for path in self.paths:
            offset = 0
            for t in stream_csv(self.fs, path, column_names=COLUMNS, column_types=types):
                behavior = t.column("behavior")
                known = pc.fill_null(pc.is_in(behavior, value_set=pa.array(BEHAVIORS)), False)
                check_rows(known.to_numpy(zero_copy_only=False), path, offset,
                           f"has behavior not in {BEHAVIORS}", behavior)
                check_rows(pc.is_valid(t.column("timestamp")).to_numpy(zero_copy_only=False),
                           path, offset, "has no timestamp")
                out = pa.table({
                    "timestamp": t.column("timestamp"),
                    "label": pc.cast(pc.is_in(behavior, value_set=self.positive), pa.int8()),
                    "user": t.column("user"),
                    "item": t.column("item"),
                    "category": t.column("category"),
                })
                offset += t.num_rows
                if self.time_range:
                    ts = out.column("timestamp")
                    out = out.filter(pc.and_(pc.greater_equal(ts, self.time_range[0]),
                                             pc.less(ts, self.time_range[1])))
                yield out
