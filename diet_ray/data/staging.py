"""Cutting a stream into stages: by time window (`hour`, `day`, `week`, `Nh`, `Nd`) or by
row count (`rows:N` rows per stage, `stages:S` equal-count stages), in time order.

Count-based cuts need each row's rank in time order without sorting the input: the first
pass keeps a histogram of timestamps (memory O(distinct timestamps)); the second pass ranks
a row as (#rows with an earlier timestamp) + (#rows with the same timestamp seen before
it). Ties therefore keep input order, and stage sizes are exact.
Window cuts align to UTC: hours and days to the epoch, weeks to Monday 00:00.
Empty windows are skipped: stage indices are dense, their time bounds are in the schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from diet_ray.data.errors import DataError

WINDOW_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400}
MONDAY_OFFSET = 4 * 86400  # 1970-01-05 was a Monday


@dataclass(frozen=True)
class StageRule:
    """A parsed `--stage-by`: `kind` is "window", "rows" or "stages"."""

    kind: str
    value: int
    text: str

    @staticmethod
    def parse(text: str) -> StageRule:
        if text in WINDOW_SECONDS:
            return StageRule("window", WINDOW_SECONDS[text], text)
        if m := re.fullmatch(r"(\d+)([hd])", text):
            unit = 3600 if m.group(2) == "h" else 86400
            return StageRule("window", int(m.group(1)) * unit, text)
        if m := re.fullmatch(r"(rows|stages):(\d+)", text):
            if int(m.group(2)) < 1:
                raise DataError(f"--stage-by {text}: the count must be at least 1")
            return StageRule(m.group(1), int(m.group(2)), text)
        raise DataError(
            f"--stage-by {text!r} is not understood: use hour, day, week, 6h, 2d, "
            "rows:N (N rows per stage) or stages:S (S equal-count stages)"
        )


class TimestampHistogram:
    """Exact counts of each distinct timestamp, merged chunk by chunk (first pass).

    Chunks already in time order (logs usually are) are appended without re-sorting; other
    chunks are merged lazily, so the cost stays O(n log n) over the whole input.
    """

    def __init__(self) -> None:
        self._values: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._sorted = True  # the pending parts, concatenated, are strictly increasing

    def add(self, ts: np.ndarray) -> None:
        if not len(ts):
            return
        v, c = np.unique(ts, return_counts=True)
        if self._values and v[0] <= self._values[-1][-1]:
            self._sorted = False
        self._values.append(v)
        self._counts.append(c)
        if not self._sorted and len(self._values) >= 64:
            self._merge()

    def _merge(self) -> None:
        if len(self._values) <= 1 and self._sorted:
            return
        allv, allc = np.concatenate(self._values), np.concatenate(self._counts)
        if not self._sorted:
            values, inv = np.unique(allv, return_inverse=True)
            allc = np.bincount(inv, weights=allc, minlength=len(values)).astype(np.int64)
            allv = values
        self._values, self._counts, self._sorted = [allv], [allc], True

    @property
    def values(self) -> np.ndarray:
        self._merge()
        return self._values[0] if self._values else np.zeros(0, dtype=np.int64)

    @property
    def counts(self) -> np.ndarray:
        self._merge()
        return self._counts[0] if self._counts else np.zeros(0, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(sum(int(c.sum()) for c in self._counts))


class StageAssigner:
    """Second pass: the stage index of every row of a chunk, in arrival order."""

    def __init__(self, rule: StageRule, hist: TimestampHistogram) -> None:
        self.rule = rule
        self.num_stages = 0
        self.hist = hist
        self.before = np.concatenate([[0], np.cumsum(hist.counts)[:-1]]).astype(np.int64)
        self.seen = np.zeros(len(hist.values), dtype=np.int64)
        total = hist.total
        if rule.kind == "rows":
            self.num_stages = -(-total // rule.value)
        elif rule.kind == "stages":
            if rule.value > total:
                raise DataError(
                    f"--stage-by {rule.text}: asks for {rule.value} stages but the input has "
                    f"only {total} rows"
                )
            self.num_stages = rule.value
        if rule.kind == "window":
            self.offset = MONDAY_OFFSET if rule.text == "week" else 0
            self.windows = np.unique((hist.values - self.offset) // rule.value)
            self.num_stages = len(self.windows)

    def __call__(self, ts: np.ndarray) -> np.ndarray:
        if self.rule.kind == "window":
            return np.searchsorted(self.windows, (ts - self.offset) // self.rule.value)
        idx = np.searchsorted(self.hist.values, ts)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_idx)) + 1]
        run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_idx)]))
        within = np.empty(len(ts), dtype=np.int64)
        within[order] = np.arange(len(ts)) - run_start
        rank = self.before[idx] + self.seen[idx] + within
        np.add.at(self.seen, idx, 1)
        if self.rule.kind == "rows":
            return rank // self.rule.value
        return rank * self.rule.value // self.hist.total
