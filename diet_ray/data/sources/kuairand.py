"""KuaiRand (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with
Randomly Exposed Videos", CIKM 2022; https://kuairand.com), Pure / 1K / 27K releases.

Input: the release's folder (searched recursively) or one log file. Logs are CSV with a
header, `log_standard_*.csv` (normal exposure, read first) then `log_random_*.csv` (random
exposure), each in name order; the columns used are

    user_id, video_id, time_ms (epoch ms), tab, duration_ms, <label column>

(the logs also hold date, hourmin, is_like, is_follow, long_view, play_time_ms, ...).
Optional side tables, found in the same folder (or the log file's folder) and joined by id:

    user_features_*.csv        user_id, user_active_degree, follow_user_num_range, ...,
                               onehot_feat0..onehot_feat17
    video_features_basic_*.csv video_id, author_id, video_type, upload_type, music_type,
                               video_duration, tag ("28,9": comma-separated tag ids), ...

Canonical row: timestamp = time_ms // 1000; label = `is_click` (options: `label`, any 0/1
log column such as `long_view` or `is_like`; `logs`, the log kinds to read, default
`[standard, random]`). Fields: user_id, video_id, tab, plus USER_FIELDS when the user table
is present and VIDEO_FIELDS, multi-hot `tag` and dense `video_duration` when the video table
is present; dense `duration_ms` from the log. Ids missing from a side table map to OOV.
Side tables are held in memory (fine for Pure and 1K; the 27K video table is ~32M rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs
from diet_ray.data.sources.base import (
    FieldSpec,
    SideTable,
    Source,
    binary_label,
    check_rows,
    input_files,
    require_columns,
)
from diet_ray.data.sources.csv_reader import csv_header, stream_csv

LOG_NAME = re.compile(r"log_(standard|random)_.*\.csv$")
USER_FIELDS = (
    "user_active_degree", "follow_user_num_range", "fans_user_num_range",
    "register_days_range", "onehot_feat0", "onehot_feat1", "onehot_feat2", "onehot_feat3",
)
VIDEO_FIELDS = ("author_id", "video_type", "upload_type", "music_type")


def _read_side(fs: fsspec.AbstractFileSystem, path: str, key: str, need: list[str],
               dense: tuple[str, ...] = ()) -> pa.Table:
    columns = [key, *need, *dense]
    require_columns(csv_header(fs, path), columns, path)
    types = {c: pa.string() for c in need} | {c: pa.float64() for c in dense} | {key: pa.int64()}
    table = pa.concat_tables(stream_csv(fs, path, column_types=types, include_columns=columns))
    check_rows(pc.is_valid(table.column(key)).to_numpy(zero_copy_only=False), path, 0,
               f"has no {key}")
    return table


class KuaiRand(Source):
    """KuaiRand logs, joined with the user and video feature tables when present."""

    name = "kuairand"

    def __init__(self, input_uri: str, label: str = "is_click",
                 logs: tuple[str, ...] | list[str] = ("standard", "random")) -> None:
        stray = set(logs) - {"standard", "random"}
        if stray or not logs:
            raise DataError(f"kuairand: logs must list 'standard' and/or 'random', got {logs}")
        self.label = label

        def keep(name: str) -> bool:
            m = LOG_NAME.search(name)
            return bool(m) and m.group(1) in logs

        self.fs, paths = input_files(input_uri, keep, "KuaiRand log_standard_*.csv or "
                                     "log_random_*.csv files")
        # standard logs first, then random ones; natural name order within each (stable)
        self.paths = sorted(paths, key=lambda p: "log_random_" in p.rsplit("/", 1)[-1])
        self.users = self.videos = None
        for path in self._siblings(input_uri, "user_features_"):
            self.users = SideTable(_read_side(self.fs, path, "user_id", list(USER_FIELDS)),
                                   "user_id")
        for path in self._siblings(input_uri, "video_features_basic_"):
            need = [*VIDEO_FIELDS, "tag"]
            table = _read_side(self.fs, path, "video_id", need, dense=("video_duration",))
            self.videos = SideTable(table, "video_id", {"tag": ","})
        self.spec = FieldSpec(
            categorical=("user_id", "video_id", "tab",
                         *(USER_FIELDS if self.users is not None else ()),
                         *(VIDEO_FIELDS if self.videos is not None else ())),
            multi_hot=("tag",) if self.videos is not None else (),
            dense=("duration_ms", *(("video_duration",) if self.videos is not None else ())),
        )

    def _siblings(self, input_uri: str, prefix: str) -> list[str]:
        """The side table named `prefix*.csv` under the input folder (or beside the input
        file), if there is one; several is an error."""
        fs, root = open_fs(input_uri)
        if fs.isdir(root):
            candidates = fs.find(root)
        else:
            candidates = fs.ls(root.rsplit("/", 1)[0], detail=False)
        found = sorted(p for p in candidates
                       if p.rsplit("/", 1)[-1].startswith(prefix) and p.endswith(".csv"))
        if len(found) > 1:
            raise DataError(f"{input_uri}: several {prefix}*.csv tables {found}; point the "
                            "input at one KuaiRand release's folder")
        return found

    def chunks(self) -> Iterator[pa.Table]:
        need = ["user_id", "video_id", "time_ms", "tab", "duration_ms", self.label]
        types = {"user_id": pa.int64(), "video_id": pa.int64(), "time_ms": pa.int64(),
                 "tab": pa.string(), "duration_ms": pa.float64(), self.label: pa.string()}
        for path in self.paths:
            require_columns(csv_header(self.fs, path), need, path,
                            "Is this a KuaiRand log_*.csv file? (the label column is set by "
                            "the 'label' option)")
            offset = 0
            for t in stream_csv(self.fs, path, column_types=types, include_columns=need):
                for col in ("user_id", "video_id", "time_ms"):
                    check_rows(pc.is_valid(t.column(col)).to_numpy(zero_copy_only=False),
                               path, offset, f"has no {col}")
                cols = {
                    "timestamp": pa.array(t.column("time_ms").to_numpy() // 1000),
                    "label": binary_label(t.column(self.label), path, self.label, offset),
                    "user_id": pc.cast(t.column("user_id"), pa.string()),
                    "video_id": pc.cast(t.column("video_id"), pa.string()),
                    "tab": t.column("tab"),
                    "duration_ms": t.column("duration_ms"),
                }
                for side, key in ((self.users, "user_id"), (self.videos, "video_id")):
                    if side is not None:
                        joined = side.take(t.column(key).to_numpy())
                        cols.update({c: joined.column(c) for c in joined.column_names})
                offset += t.num_rows
                yield pa.table(cols)
