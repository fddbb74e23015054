"""The bench-distill helpers: peak memory of a process tree, the in-process reference rate,
the report."""

from __future__ import annotations

import subprocess
import sys
import time

from diet_ray.config import load_config
from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.schema import Schema
from diet_ray.data.sources import build_source
from diet_ray.evaluate.distill_speed import forward_rows_per_s, report, scoring_models
from diet_ray.evaluate.peak_memory import PeakMemory


def test_peak_memory_sees_a_child_process_allocation():
    hold = ("import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
            "time.sleep(3)")
    with PeakMemory(every_s=0.1) as quiet:
        time.sleep(0.5)
    with PeakMemory(every_s=0.1) as busy:
        subprocess.run([sys.executable, "-c", hold], check=True)
    assert busy.peak_bytes - quiet.peak_bytes > 250 * 2**20  # the child's 300 MiB counted
    assert busy.samples and all(b > 0 for _, b in busy.samples)


def test_forward_rate_reads_the_stage_and_runs_every_model(click_log, tmp_path):
    csv, cfg_yaml = click_log
    data = str(tmp_path / "prepared")
    prepare(build_source("csv", str(csv), str(cfg_yaml)), data, PrepareOptions(stage_by="rows:100"))
    cfg = load_config(None, [], data=data, out=str(tmp_path / "out"))
    schema = Schema.load(data)
    models = scoring_models(cfg, schema, 2)
    assert len(models) == 2 and not models[0].training
    assert forward_rows_per_s(data, schema, 1, models, 64) > 0


def test_report_lines():
    run = {"stages": 10, "wall_seconds": 100.0, "peak_bytes": 2**31, "ratio_median": 2.5,
           "ratio_max": 3.0,
           "per_stage": [{"peak_bytes_so_far": (i + 1) * 2**29} for i in range(10)]}
    scoring = {"stage": 1, "rows": 1000, "checkpoints=1": {
        "in_process_forward_rows_per_s": 1000.0, "ray_data_scoring_rows_per_s": 500.0,
        "ratio": 0.5, "ray_data_first_output_s": 1.5, "cold_stage_seconds": 9.0}}
    text = report({"data": "d", "cpu_count": 2, "scoring": scoring, "distill": [run]})
    assert ("Ray Data scoring 500 rows/s = 50% (first scored block after 1.5s; the run's first "
            "stage, with the pool's start: 9.0s)") in text
    assert "peak memory 2.00 GiB, stage / continual pass: median 2.50x, max 3.00x" in text
    assert "1: 0.50, 10: 5.00" in text
