"""`diet-ray distill --evaluate-every`: snapshots evaluated while a tiny distillation runs,
the AUC-by-stage summary and plot written, and a rerun that evaluates nothing twice."""

from __future__ import annotations

import csv
import json

import pytest

from diet_ray.cli import main
from diet_ray.data.errors import DataError
from diet_ray.evaluate.evaluate_every import EvaluateEvery
from tests.integration.tiny_run import OVERRIDES, prepare_tiny_stream


def test_due_stages():
    every = EvaluateEvery("out", "data", 2, ["fm"])
    assert every.due(total=3, num_stages=4) == [1, 2]  # every 2nd, and the last
    assert every.due(total=4, num_stages=4) == [1]  # stage 3 has no next stage to test on
    assert EvaluateEvery("out", "data", 3, ["fm"]).due(total=7, num_stages=10) == [2, 5, 6]
    with pytest.raises(DataError, match="--evaluate-archs"):
        EvaluateEvery("out", "data", 2, ["gbdt"])
    with pytest.raises(DataError, match="--evaluate-every"):
        EvaluateEvery("out", "data", 0, ["fm"])


@pytest.mark.slow  # ~130 s on 2 cores: a 3-stage Ray Train distillation run twice
def test_evaluate_every_two_stages_and_resume(tmp_path, ray_local):
    data = prepare_tiny_stream(tmp_path)
    out = tmp_path / "run"
    argv = ["distill", "--data", data, "--out", str(out), "--stages", "3",
            "--evaluate-every", "2", "--evaluate-archs", "lr,fm", *OVERRIDES]
    assert main(argv) == 0
    evaluated = sorted(p.name for p in (out / "eval").glob("stage=*"))
    assert evaluated == ["stage=0001", "stage=0002"]
    for stage in (1, 2):
        rows = json.loads((out / "eval" / f"stage={stage:04d}" / "results.json").read_text())
        assert [r["arch"] for r in rows] == ["lr", "fm"]
        assert all(r["snapshot_stage"] == stage and r["test_stage"] == stage + 1 for r in rows)
    with open(out / "eval" / "auc_by_stage.csv") as f:
        summary = list(csv.DictReader(f))
    assert [(r["stage"], r["arch"]) for r in summary] == [
        ("1", "lr"), ("1", "fm"), ("2", "lr"), ("2", "fm")]
    assert (out / "eval" / "auc_by_stage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = {p: p.stat().st_mtime_ns for p in (out / "eval").glob("stage=*/results.json")}
    assert main(argv) == 0  # resume: everything committed and evaluated already
    assert {p: p.stat().st_mtime_ns for p in results} == results
