"""Tmall repeat buyers (IJCAI-15 competition, Tianchi dataset 42): `user_log_format1.csv`,
CSV with header

    user_id, item_id, cat_id, seller_id, brand_id, time_stamp, action_type

time_stamp is the day as mmdd without a year ("1111", "511"); action_type is 0 click,
1 add-to-cart, 2 purchase, 3 add-to-favourite. Input: the folder (searched for
`user_log_format1*.csv`) or the log file itself. `user_info_format1.csv` (user_id,
age_range, gender), when found in the folder (or beside the log file), is joined by user_id.

Canonical row: timestamp = that day at 00:00 UTC in `year` (default 2014, the logs' year),
so every action of a day shares one timestamp (stage by `day` or coarser). label = 1 when
action_type is in `positive` (default 1, 2, 3: any action beyond a click), 0 for clicks.
Fields: user_id, item_id, cat_id, seller_id, brand_id, plus age_range and gender with the
user table. Options (also the keys of an optional YAML config): `positive`, `year`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs
from diet_ray.data.sources.base import (
    FieldSpec,
    SideTable,
    Source,
    check_rows,
    civil_seconds,
    input_files,
    require_columns,
)
from diet_ray.data.sources.csv_reader import csv_header, stream_csv

LOG_FIELDS = ["user_id", "item_id", "cat_id", "seller_id", "brand_id"]
USER_FIELDS = ["age_range", "gender"]
ACTIONS = ("0", "1", "2", "3")


class Tmall(Source):
    """The Tmall user log, with user age range and gender when user_info is present."""

    name = "tmall"

    def __init__(self, input_uri: str, positive: tuple[int, ...] | list[int] = (1, 2, 3),
                 year: int = 2014) -> None:
        chosen = {str(a).strip() for a in positive}
        if not chosen or not chosen <= set(ACTIONS):
            raise DataError(f"tmall: positive must list action types 0-3, got {positive}")
        self.positive = pa.array(sorted(chosen))
        self.year = int(year)
        self.fs, self.paths = input_files(
            input_uri, lambda n: n.startswith("user_log_format1") and n.endswith(".csv"),
            "user_log_format1.csv")
        self.users = self._user_info(input_uri)
        self.spec = FieldSpec(
            categorical=(*LOG_FIELDS, *(USER_FIELDS if self.users is not None else ())))

    def _user_info(self, input_uri: str) -> SideTable | None:
        """user_info_format1.csv keyed by user_id, or None when there is none."""
        fs, root = open_fs(input_uri)
        if fs.isdir(root):
            candidates = fs.find(root)
        else:
            candidates = fs.ls(root.rsplit("/", 1)[0], detail=False)
        found = sorted(p for p in candidates if p.rsplit("/", 1)[-1] == "user_info_format1.csv")
        if not found:
            return None
        path = found[0]
        require_columns(csv_header(fs, path), ["user_id", *USER_FIELDS], path)
        types = {"user_id": pa.int64()} | {c: pa.string() for c in USER_FIELDS}
        table = pa.concat_tables(stream_csv(fs, path, column_types=types,
                                            include_columns=["user_id", *USER_FIELDS]))
        check_rows(pc.is_valid(table.column("user_id")).to_numpy(zero_copy_only=False),
                   path, 0, "has no user_id")
        return SideTable(table, "user_id")

    def _timestamps(self, column: pa.ChunkedArray, path: str, offset: int) -> np.ndarray:
        text = pc.fill_null(column, "")
        ok = pc.match_substring_regex(text, r"^\d{3,4}$").to_numpy(zero_copy_only=False)
        mmdd = np.zeros(len(text), np.int64)
        mmdd[ok] = pc.cast(text.filter(pa.array(ok)), pa.int64()).to_numpy()
        seconds, valid = civil_seconds(np.full(len(mmdd), self.year), mmdd // 100, mmdd % 100)
        check_rows(ok & valid, path, offset,
                   f"has time_stamp that is not a valid mmdd date in {self.year}", column)
        return seconds

    def chunks(self) -> Iterator[pa.Table]:
        need = [*LOG_FIELDS, "time_stamp", "action_type"]
        types = {c: pa.string() for c in need} | {"user_id": pa.int64()}
        for path in self.paths:
            require_columns(csv_header(self.fs, path), need, path,
                            "Expected the IJCAI-15 user_log_format1.csv header.")
            offset = 0
            for t in stream_csv(self.fs, path, column_types=types, include_columns=need):
                user_ids = t.column("user_id")
                check_rows(pc.is_valid(user_ids).to_numpy(zero_copy_only=False), path, offset,
                           "has no user_id")
                action = t.column("action_type")
                known = pc.fill_null(pc.is_in(action, value_set=pa.array(ACTIONS)), False)
                check_rows(known.to_numpy(zero_copy_only=False), path, offset,
                           "has action_type not in 0-3", action)
                cols = {
                    "timestamp": pa.array(self._timestamps(t.column("time_stamp"), path, offset)),
                    "label": pc.cast(pc.is_in(action, value_set=self.positive), pa.int8()),
                    **{c: t.column(c) for c in LOG_FIELDS},
                    "user_id": pc.cast(user_ids, pa.string()),
                }
                if self.users is not None:
                    joined = self.users.take(user_ids.to_numpy())
                    cols.update({c: joined.column(c) for c in joined.column_names})
                offset += t.num_rows
                yield pa.table(cols)
