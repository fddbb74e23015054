"""The distillation job's speed targets, measured (`diet-ray bench-distill`).

Three figures, each on a prepared dataset of the user's choice:

1. **Scoring overhead.** Stages `--scoring-stage` .. `--scoring-stage + --repeats` are
   scored by the real job code (`ScoringStream`: probe sample, setup, the gated Parquet
   reads -> `map_batches` on the scorer actor pool -> the O(m) merge), one pipeline for all
   of them as in a run; the first stage pays the pool's start and is reported apart. Each
   later stage is compared with the reference: the same stage read in-process from the same
   Parquet files and pushed through the same model(s) in plain `inference_mode` forward
   passes (read + collate + forward, one process using every core). Both run with C = 1 and
   with the configured C checkpoints (the scorer runs one forward per checkpoint, so the
   reference does as many); medians over the warm stages are reported.
2. **Cost of a stage.** `diet-ray distill` runs in a subprocess (its own local Ray) for each
   `--stages N`; every committed manifest carries the stage's `stage_seconds` (scoring,
   writing, continual pass, relabelling, outer steps, up to the commit) and
   `continual_seconds` (the one continual training pass over the stage inside it). The
   ratio stage / continual pass is reported per stage (median and max).
3. **Peak memory.** The same subprocess tree (driver, GCS, raylet, every Ray worker) is
   sampled for PSS (`PeakMemory`) while it runs; the peak is reported per `--stages N`,
   and per stage as the peak from the start until that stage's commit (so one 40-stage
   run also gives the peak at 10 stages).

Output: a table on stdout and `OUT/bench-distill.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from diet_ray.config import DistillConfig, load_config
from diet_ray.data.errors import DataError
from diet_ray.data.schema import Schema
from diet_ray.data.stream import read_stage_table, table_batches
from diet_ray.distill.distiller import seeded
from diet_ray.evaluate.peak_memory import PeakMemory
from diet_ray.memory.store import SnapshotStore
from diet_ray.models import build_model

log = logging.getLogger("diet_ray")


def scoring_models(cfg: DistillConfig, schema: Schema, checkpoints: int) -> list[torch.nn.Module]:
    """`checkpoints` copies of the continual architecture (weights do not change the cost)."""
    torch.manual_seed(seeded(cfg.seed, 0, 0, 1))
    model = build_model(cfg.continual.arch, schema).eval()
    return [model] * checkpoints


def forward_rows_per_s(uri: str, schema: Schema, stage: int, models: list[torch.nn.Module],
                       batch_size: int) -> float:
    """Rows/s of reading the stage's Parquet in-process and one forward per model."""
    start = time.perf_counter()
    table = read_stage_table(uri, stage, schema)
    with torch.inference_mode():
        for batch in table_batches(table, schema, batch_size):
            for model in models:
                model(batch)
    return table.num_rows / (time.perf_counter() - start)


def scoring_benchmark(cfg: DistillConfig, schema: Schema, stage: int, repeats: int) -> dict:
    """Ray Data scoring as the job runs it, against the in-process forward pass, per C.

    One `ScoringStream` over stages `stage .. stage + repeats`: the first stage pays the
    actor pool's start (reported as the cold stage), each later one is scored on the warm
    pool and compared with an in-process forward pass over the same stage's files, timed
    just before it (the stream's reads wait at the gate meanwhile, so the two never
    overlap)."""
    from diet_ray.influence.scoring_stream import ScoringStream
    from diet_ray.pipeline import init_ray

    stages = list(range(stage, stage + repeats + 1))
    if stages[-1] >= len(schema.stages) or min(schema.stage(s).rows for s in stages) == 0:
        raise DataError(f"scoring with --scoring-stage {stage} --repeats {repeats} needs "
                        f"non-empty stages {stages[0]}..{stages[-1]}; {cfg.data} has "
                        f"{len(schema.stages)} stages")
    init_ray()
    out: dict[str, Any] = {"stage": stage, "stages": stages, "rows": schema.stage(stage).rows,
                           "num_scorers": cfg.influence.num_scorers,
                           "scorer_cpus": cfg.influence.scorer_cpus,
                           "batch_size": cfg.influence.batch_size}
    for c in sorted({1, cfg.influence.checkpoints}):
        models = scoring_models(cfg, schema, c)
        forward_rows_per_s(cfg.data, schema, stage, models, cfg.influence.batch_size)  # warm-up
        inproc, ray_rates, first_outputs = [], [], []
        with ScoringStream(cfg.data, schema, cfg, stages) as stream:
            _candidates, cold = stream.score(stages[0], models)
            for s in stages[1:]:
                inproc.append(forward_rows_per_s(cfg.data, schema, s, models,
                                                 cfg.influence.batch_size))
                _candidates, stats = stream.score(s, models)
                ray_rates.append(stats["scored_rows_per_s"])
                first_outputs.append(stats["scoring_first_output_s"])
        fwd, ray_med = statistics.median(inproc), statistics.median(ray_rates)
        out[f"checkpoints={c}"] = {"in_process_forward_rows_per_s": fwd,
                                   "ray_data_scoring_rows_per_s": ray_med,
                                   "ratio": ray_med / fwd, "in_process_all": inproc,
                                   "ray_data_all": ray_rates,
                                   "ray_data_first_output_s": statistics.median(first_outputs),
                                   "cold_stage_seconds": cold["scoring_seconds"],
                                   "cold_stage_first_output_s": cold["scoring_first_output_s"]}
        log.info("scoring, C=%d: in-process forward %.0f rows/s, Ray Data scoring %.0f rows/s "
                 "(%.0f%%)", c, fwd, ray_med, 100 * ray_med / fwd)
    return out


def distill_run(args: argparse.Namespace, stages: int) -> dict:
    """`diet-ray distill` for stages 0..stages-1 in a subprocess; per-stage costs, peak memory."""
    out = str(Path(args.out).absolute() / f"distill-{stages}")
    cmd = [sys.executable, "-m", "diet_ray.cli", "distill", "--data", args.data, "--out", out,
           "--stages", str(stages), *(["--config", args.config] if args.config else []),
           *args.overrides]
    log.info("running %s", " ".join(cmd))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    start, started_at = time.perf_counter(), time.time()
    with PeakMemory() as memory:
        proc = subprocess.Popen(cmd, env=env)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: the job must not outlive its benchmark
                proc.terminate()
                proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"distill with --stages {stages} failed (exit code {code})")
    store = SnapshotStore(out)
    per_stage = []
    for t in store.stages():
        manifest = store.manifest(t)
        committed = datetime.fromisoformat(manifest.created).timestamp() - started_at
        per_stage.append({
            **{k: manifest.meta.get(k) for k in (
                "stage", "stage_seconds", "continual_seconds", "scoring_seconds",
                "outer_seconds", "memory_slots", "scored_rows_per_s")},
            # the job's peak memory from its start until this stage was committed
            "peak_bytes_so_far": max((b for s, b in memory.samples if s <= committed),
                                     default=0),
        })
    ratios = [s["stage_seconds"] / s["continual_seconds"] for s in per_stage]
    return {"stages": stages, "wall_seconds": wall, "peak_bytes": memory.peak_bytes,
            "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
            "ratio_after_first": statistics.median(ratios[1:]) if len(ratios) > 1 else None,
            "per_stage": per_stage,
            "memory_samples": memory.samples[:: max(1, len(memory.samples) // 200)]}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--out", required=True, help="folder for the runs and bench-distill.json")
    p.add_argument("--stages", default="10", help="comma-separated stage counts to distil, "
                   "e.g. 10,40 (peak memory per count); empty: scoring only")
    p.add_argument("--scoring-stage", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3,
                   help="warm stages scored after the first (default 3)")
    p.add_argument("--skip-scoring", action="store_true")
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("overrides", nargs="*", help="dotted distillation overrides")


def report(result: dict) -> str:
    lines = [f"bench-distill on {result['data']} ({result['cpu_count']} CPUs)"]
    scoring = result.get("scoring")
    if scoring:
        lines.append(f"scoring stage {scoring['stage']} ({scoring['rows']:,} rows):")
        for key, s in scoring.items():
            if key.startswith("checkpoints="):
                lines.append(f"  {key}: in-process forward {s['in_process_forward_rows_per_s']:,.0f}"
                             f" rows/s, Ray Data scoring {s['ray_data_scoring_rows_per_s']:,.0f} "
                             f"rows/s = {100 * s['ratio']:.0f}% (first scored block after "
                             f"{s['ray_data_first_output_s']:.1f}s; the run's first stage, "
                             f"with the pool's start: {s['cold_stage_seconds']:.1f}s)")
    for run in result["distill"]:
        lines.append(f"distill {run['stages']} stages: {run['wall_seconds']:.0f}s wall, peak "
                     f"memory {run['peak_bytes'] / 2**30:.2f} GiB, stage / continual pass: median "
                     f"{run['ratio_median']:.2f}x, max {run['ratio_max']:.2f}x")
        marks = sorted({min(n, run['stages']) for n in (1, 10, 20, 40, run['stages'])})
        peaks = ", ".join(f"{n}: {run['per_stage'][n - 1]['peak_bytes_so_far'] / 2**30:.2f}"
                          for n in marks if n <= len(run['per_stage']))
        lines.append(f"  peak memory (GiB) up to the commit of stage n: {peaks}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # `kill` (SIGTERM) unwinds like Ctrl-C, so a running distill subprocess is stopped too
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    cfg = load_config(args.config, list(args.overrides), data=args.data, out=args.out)
    schema = Schema.load(cfg.data)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"data": cfg.data, "cpu_count": os.cpu_count(),
                              "config": cfg.to_dict(), "distill": []}
    if not args.skip_scoring:
        import ray

        result["scoring"] = scoring_benchmark(cfg, schema, args.scoring_stage, args.repeats)
        ray.shutdown()
    for n in (int(s) for s in args.stages.split(",") if s.strip()):
        result["distill"].append(distill_run(args, n))
        (Path(args.out) / "bench-distill.json").write_text(json.dumps(result, indent=2))
    (Path(args.out) / "bench-distill.json").write_text(json.dumps(result, indent=2))
    print(report(result))
    return 0
