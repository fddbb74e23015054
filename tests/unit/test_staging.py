"""Stage cutting: exact count-based stages with ties, UTC windows, skipped empty windows."""

import numpy as np
import pytest

from diet_ray.data.errors import DataError
from diet_ray.data.staging import StageAssigner, StageRule, TimestampHistogram


def assign_all(rule: str, chunks: list[np.ndarray]) -> np.ndarray:
    hist = TimestampHistogram()
    for c in chunks:
        hist.add(c)
    assign = StageAssigner(StageRule.parse(rule), hist)
    return np.concatenate([assign(c) for c in chunks]), assign.num_stages


def test_rows_rule_gives_exact_sizes_and_time_order_with_ties():
    # 10 rows, unsorted, with ties on 5 across a boundary; two chunks
    ts = np.array([9, 5, 1, 5, 5, 7, 2, 5, 3, 8])
    stages, n = assign_all("rows:4", [ts[:6], ts[6:]])
    assert n == 3
    assert np.bincount(stages).tolist() == [4, 4, 2]
    # time order: every row in stage s is <= every row in stage s+1
    for s in range(2):
        assert ts[stages == s].max() <= ts[stages == s + 1].min()
    # ties on 5 keep arrival order: ranks 3,4,5,6 -> the first 5 seen goes to stage 0
    fives = np.flatnonzero(ts == 5)
    assert stages[fives].tolist() == [0, 1, 1, 1]


def test_stages_rule_equal_counts():
    rng = np.random.default_rng(0)
    ts = rng.integers(0, 50, 1000)  # many ties
    stages, n = assign_all("stages:10", [ts[:333], ts[333:]])
    assert n == 10 and np.bincount(stages).tolist() == [100] * 10


def test_day_windows_align_to_utc_and_skip_empty_days():
    day = 86400
    ts = np.array([0, 100, day - 1, day, 3 * day + 5])  # day 2 is empty
    stages, n = assign_all("day", [ts])
    assert n == 3
    assert stages.tolist() == [0, 0, 0, 1, 2]


def test_week_windows_start_on_monday():
    monday = 4 * 86400  # 1970-01-05
    ts = np.array([monday - 1, monday, monday + 6 * 86400])
    stages, _ = assign_all("week", [ts])
    assert stages.tolist() == [0, 1, 1]


@pytest.mark.parametrize("bad", ["fortnight", "rows:0", "rows:x", ""])
def test_bad_rules_are_explained(bad):
    with pytest.raises(DataError, match="stage-by"):
        StageRule.parse(bad)


def test_more_stages_than_rows_is_an_error():
    hist = TimestampHistogram()
    hist.add(np.array([1, 2]))
    with pytest.raises(DataError, match="only 2 rows"):
        StageAssigner(StageRule.parse("stages:3"), hist)
