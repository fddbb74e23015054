"""`diet-ray evaluate` on a tiny snapshot: a 2-trial Ray Tune fan-out completes and writes
its results."""

from __future__ import annotations

import csv
import json

from diet_ray.cli import main
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import build_source
from diet_ray.distill.local import distill_local
from diet_ray.memory.store import SnapshotStore
from tests.conftest import GENERIC_YAML, write_click_log
from tests.unit.distill_fixtures import tiny_config


def test_two_trial_tune_run_on_a_tiny_snapshot(tmp_path, ray_local, capsys):
    (tmp_path / "log.yaml").write_text(GENERIC_YAML)
    source = build_source("csv", str(write_click_log(tmp_path / "log.csv")),
                          str(tmp_path / "log.yaml"))
    data = str(tmp_path / "prepared")
    prepare(source, data, PrepareOptions(stage_by="rows:100"))
    state = distill_local(data, tiny_config(stages=3))
    SnapshotStore(str(tmp_path / "run")).commit(2, 1, state.to_arrays(), {"rows": 60}, "test")
    code = main(["evaluate", "--snapshot", str(tmp_path / "run"), "--data", data,
                 "--archs", "lr,fm", "--seeds", "1", "--out", str(tmp_path / "eval")])
    assert code == 0
    assert "tested on stage 3" in capsys.readouterr().out
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [r["arch"] for r in rows] == ["lr", "fm"]
    assert all(0.0 <= r["auc"] <= 1.0 and r["rows_trained"] > 0 for r in rows)
    with open(tmp_path / "eval" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
